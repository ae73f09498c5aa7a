"""URL routes of the template API (mounted at /api/)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from templates_app.api import DatasetTemplatesViewSet, TemplateViewSet

router = SimpleRouter()
router.register("templates", TemplateViewSet, basename="template")

urlpatterns = [
    path(
        "datasets/<str:dataset_id>/templates/",
        DatasetTemplatesViewSet.as_view({"get": "list", "post": "create"}),
        name="dataset-templates",
    ),
    *router.urls,
]
