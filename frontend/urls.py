"""The web pages. Every dataset step has its own URL, so reload and Back work."""

from django.contrib.auth import views as auth_views
from django.urls import path

from frontend import views
from samsite.auth_views import LoginView

urlpatterns = [
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.dataset_list, name="dataset-list"),
    path("help/segmenter/", views.segmenter_help, name="ui-help-segmenter"),
    path("datasets/new/", views.dataset_new, name="ui-dataset-new"),
    path("datasets/<str:dataset_id>/", views.dataset_home, name="ui-dataset"),
    path("datasets/<str:dataset_id>/rename/", views.dataset_rename_view, name="ui-dataset-rename"),
    path("datasets/<str:dataset_id>/delete/", views.dataset_delete_view, name="ui-dataset-delete"),
    # step 1
    path("datasets/<str:dataset_id>/upload/", views.dataset_upload, name="ui-upload"),
    path(
        "datasets/<str:dataset_id>/images/<str:image_id>/class/",
        views.image_class_view,
        name="ui-image-class",
    ),
    path(
        "datasets/<str:dataset_id>/images/<str:image_id>/delete/",
        views.image_delete_view,
        name="ui-image-delete",
    ),
    # step 2
    path("datasets/<str:dataset_id>/templates/", views.dataset_templates, name="ui-templates"),
    path(
        "datasets/<str:dataset_id>/images/<str:image_id>/segment/",
        views.image_segment,
        name="ui-image-segment",
    ),
    path(
        "datasets/<str:dataset_id>/images/<str:image_id>/display/",
        views.image_display,
        name="ui-image-display",
    ),
    path("datasets/<str:dataset_id>/templates/save/", views.template_save, name="ui-template-save"),
    path("datasets/<str:dataset_id>/model/", views.dataset_model, name="ui-dataset-model"),
    path(
        "datasets/<str:dataset_id>/templates/<str:template_id>/delete/",
        views.template_delete_view,
        name="ui-template-delete",
    ),
    path(
        "datasets/<str:dataset_id>/templates/<str:template_id>/mask.png",
        views.template_mask,
        name="ui-template-mask",
    ),
    # step 3
    path("datasets/<str:dataset_id>/generate/", views.dataset_generate, name="ui-generate"),
    path("datasets/<str:dataset_id>/preview/", views.preview_view, name="ui-preview"),
    path(
        "datasets/<str:dataset_id>/generate/settings/",
        views.generate_settings_view,
        name="ui-generate-settings",
    ),
    path(
        "datasets/<str:dataset_id>/templates/<str:template_id>/edits/",
        views.template_edits_view,
        name="ui-template-edits",
    ),
    # jobs
    path("datasets/<str:dataset_id>/jobs/", views.dataset_jobs, name="ui-jobs"),
    path("jobs/<str:job_id>/", views.job_detail, name="ui-job"),
    path("jobs/<str:job_id>/cancel/", views.job_cancel_view, name="ui-job-cancel"),
    path("jobs/<str:job_id>/retry/", views.job_retry_view, name="ui-job-retry"),
    path("jobs/<str:job_id>/events/", views.job_events, name="ui-job-events"),
    path("variants/<str:variant_id>/thumbnail/", views.variant_thumbnail, name="ui-variant-thumbnail"),
]
