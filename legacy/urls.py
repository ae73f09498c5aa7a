"""The seed-compatible routes, each served at ``/sam/...`` and at the old proxy's ``/api/sam/...``.

A trailing slash is tolerated (``/sam/init/``), so no client hits a redirect that would drop its POST body.
"""

from __future__ import annotations

from django.urls import re_path

from legacy import views
from samsite.views import health

ROUTES = [
    ("health", health, "health"),
    ("dataset/init", views.DatasetInitView.as_view(), "dataset-init"),
    ("dataset/template/save", views.TemplateSaveView.as_view(), "template-save"),
    ("dataset/templates", views.TemplateListView.as_view(), "templates"),
    ("dataset/point_preview", views.PointPreviewView.as_view(), "point-preview"),
    ("dataset/template/preview", views.TemplatePreviewView.as_view(), "template-preview"),
    ("dataset/precompute", views.PrecomputeView.as_view(), "precompute"),
    ("dataset/prewarm", views.PrewarmView.as_view(), "prewarm"),
    ("dataset/apply_stream", views.ApplyStreamView.as_view(), "apply-stream"),
    ("init", views.LegacyInitView.as_view(), "init"),
    ("segment", views.LegacySegmentView.as_view(), "segment"),
    ("save_component", views.LegacySaveComponentView.as_view(), "save-component"),
    ("components", views.LegacyComponentsView.as_view(), "components"),
    ("apply", views.LegacyApplyView.as_view(), "apply"),
    ("batch_process", views.BatchProcessView.as_view(), "batch-process"),
    ("batch_process_stream", views.BatchProcessStreamView.as_view(), "batch-process-stream"),
]

PREFIXES = {"sam/": "seed", "api/sam/": "seed-api"}

urlpatterns = [
    re_path(rf"^{prefix}{route}/?$", view, name=f"{label}-{name}")
    for prefix, label in PREFIXES.items()
    for route, view, name in ROUTES
]
