"""URL routes of the dataset API (mounted at /api/): datasets, images and their authenticated files."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from datasets.api import DatasetViewSet, ImageViewSet, ModelListView
from datasets.views import ImageFileView, ImageThumbnailView

router = SimpleRouter()
router.register("datasets", DatasetViewSet, basename="dataset")
router.register("images", ImageViewSet, basename="image")

urlpatterns = [
    path("models/", ModelListView.as_view(), name="model-list"),
    path("images/<str:image_id>/file/", ImageFileView.as_view(), name="image-file"),
    path("images/<str:image_id>/thumbnail/", ImageThumbnailView.as_view(), name="image-thumbnail"),
    *router.urls,
]
