"""The web pages. Every dataset step has its own URL, so reload and Back work."""

from django.contrib.auth import views as auth_views
from django.urls import path

from frontend.views import datasets, edits, jobs, templates
from samsite.auth_views import LoginView

urlpatterns = [
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", datasets.dataset_list, name="dataset-list"),
    path("help/segmenter/", templates.segmenter_help, name="ui-help-segmenter"),
    path("datasets/new/", datasets.dataset_new, name="ui-dataset-new"),
    path("datasets/<str:dataset_id>/", datasets.dataset_home, name="ui-dataset"),
    path("datasets/<str:dataset_id>/rename/", datasets.dataset_rename_view, name="ui-dataset-rename"),
    path("datasets/<str:dataset_id>/delete/", datasets.dataset_delete_view, name="ui-dataset-delete"),
    # step 1
    path("datasets/<str:dataset_id>/upload/", datasets.dataset_upload, name="ui-upload"),
    path(
        "datasets/<str:dataset_id>/images/<str:image_id>/class/",
        datasets.image_class_view,
        name="ui-image-class",
    ),
    path(
        "datasets/<str:dataset_id>/images/<str:image_id>/delete/",
        datasets.image_delete_view,
        name="ui-image-delete",
    ),
    # step 2
    path("datasets/<str:dataset_id>/templates/", templates.dataset_templates, name="ui-templates"),
    path(
        "datasets/<str:dataset_id>/images/<str:image_id>/segment/",
        templates.image_segment,
        name="ui-image-segment",
    ),
    path(
        "datasets/<str:dataset_id>/images/<str:image_id>/display/",
        templates.image_display,
        name="ui-image-display",
    ),
    path("datasets/<str:dataset_id>/templates/save/", templates.template_save, name="ui-template-save"),
    path("datasets/<str:dataset_id>/model/", templates.dataset_model, name="ui-dataset-model"),
    path(
        "datasets/<str:dataset_id>/templates/<str:template_id>/delete/",
        templates.template_delete_view,
        name="ui-template-delete",
    ),
    path(
        "datasets/<str:dataset_id>/templates/<str:template_id>/mask.png",
        templates.template_mask,
        name="ui-template-mask",
    ),
    # step 3
    path("datasets/<str:dataset_id>/generate/", edits.dataset_generate, name="ui-generate"),
    path("datasets/<str:dataset_id>/preview/", edits.preview_view, name="ui-preview"),
    path(
        "datasets/<str:dataset_id>/generate/settings/",
        edits.generate_settings_view,
        name="ui-generate-settings",
    ),
    path(
        "datasets/<str:dataset_id>/templates/<str:template_id>/edits/",
        edits.template_edits_view,
        name="ui-template-edits",
    ),
    # jobs
    path("datasets/<str:dataset_id>/jobs/", jobs.dataset_jobs, name="ui-jobs"),
    path("jobs/<str:job_id>/", jobs.job_detail, name="ui-job"),
    path("jobs/<str:job_id>/cancel/", jobs.job_cancel_view, name="ui-job-cancel"),
    path("jobs/<str:job_id>/retry/", jobs.job_retry_view, name="ui-job-retry"),
    path("jobs/<str:job_id>/events/", jobs.job_events, name="ui-job-events"),
    path("variants/<str:variant_id>/thumbnail/", jobs.variant_thumbnail, name="ui-variant-thumbnail"),
]
