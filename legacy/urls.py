"""The seed-compatible routes, each served at ``/sam/...`` and at the old proxy's ``/api/sam/...``.

A trailing slash is tolerated (``/sam/init/``), so no client hits a redirect that would drop its POST body.
"""

from __future__ import annotations

from django.urls import re_path

from legacy.views import batch, dataset_flow, single_image
from samsite.views import health

ROUTES = [
    ("health", health, "health"),
    ("dataset/init", dataset_flow.DatasetInitView.as_view(), "dataset-init"),
    ("dataset/template/save", dataset_flow.TemplateSaveView.as_view(), "template-save"),
    ("dataset/templates", dataset_flow.TemplateListView.as_view(), "templates"),
    ("dataset/point_preview", dataset_flow.PointPreviewView.as_view(), "point-preview"),
    ("dataset/template/preview", dataset_flow.TemplatePreviewView.as_view(), "template-preview"),
    ("dataset/precompute", dataset_flow.PrecomputeView.as_view(), "precompute"),
    ("dataset/prewarm", dataset_flow.PrewarmView.as_view(), "prewarm"),
    ("dataset/apply_stream", dataset_flow.ApplyStreamView.as_view(), "apply-stream"),
    ("init", single_image.LegacyInitView.as_view(), "init"),
    ("segment", single_image.LegacySegmentView.as_view(), "segment"),
    ("save_component", single_image.LegacySaveComponentView.as_view(), "save-component"),
    ("components", single_image.LegacyComponentsView.as_view(), "components"),
    ("apply", single_image.LegacyApplyView.as_view(), "apply"),
    ("batch_process", batch.BatchProcessView.as_view(), "batch-process"),
    ("batch_process_stream", batch.BatchProcessStreamView.as_view(), "batch-process-stream"),
]

PREFIXES = {"sam/": "seed", "api/sam/": "seed-api"}

urlpatterns = [
    re_path(rf"^{prefix}{route}/?$", view, name=f"{label}-{name}")
    for prefix, label in PREFIXES.items()
    for route, view, name in ROUTES
]
