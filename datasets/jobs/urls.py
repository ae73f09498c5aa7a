"""URL routes of generation jobs, variants and their live events (all under /api/)."""

from django.urls import path

from datasets.jobs import api as job_api

urlpatterns = [
    path(
        "datasets/<str:dataset_id>/jobs/", job_api.DatasetJobListCreateApi.as_view(), name="api-dataset-jobs"
    ),
    path("jobs/", job_api.JobListApi.as_view(), name="api-job-list"),
    path("jobs/<str:job_id>/", job_api.JobDetailApi.as_view(), name="api-job-detail"),
    path("jobs/<str:job_id>/cancel/", job_api.JobCancelApi.as_view(), name="api-job-cancel"),
    path("jobs/<str:job_id>/retry/", job_api.JobRetryApi.as_view(), name="api-job-retry"),
    path("jobs/<str:job_id>/items/", job_api.JobItemListApi.as_view(), name="api-job-items"),
    path("jobs/<str:job_id>/variants/", job_api.JobVariantListApi.as_view(), name="api-job-variants"),
    path("jobs/<str:job_id>/download/", job_api.JobDownloadApi.as_view(), name="api-job-download"),
    path("jobs/<str:job_id>/export/", job_api.JobExportApi.as_view(), name="api-job-export"),
    path("jobs/<str:job_id>/events/", job_api.JobEventsApi.as_view(), name="api-job-events"),
    path("variants/<str:variant_id>/file/", job_api.VariantFileApi.as_view(), name="api-variant-file"),
    path("variants/<str:variant_id>/mask/", job_api.VariantMaskApi.as_view(), name="api-variant-mask"),
]
