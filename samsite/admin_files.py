"""Admin helpers: thumbnails served through an admin-only view (media is never public)."""

from __future__ import annotations

import mimetypes

from django.contrib import admin
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html


class FilePreviewAdminMixin:
    """Adds ``<admin url>/<pk>/file/<field>/`` (staff only) and a ``preview(obj)`` column.

    ``preview_fields`` lists the FileFields to preview, first non-empty wins.
    """

    preview_fields: tuple[str, ...] = ()

    def get_urls(self):
        opts = self.model._meta
        custom = [
            path(
                "<uuid:object_id>/file/<str:field>/",
                self.admin_site.admin_view(self.serve_file),
                name=f"{opts.app_label}_{opts.model_name}_file",
            )
        ]
        return custom + super().get_urls()

    def serve_file(self, request, object_id, field):
        if field not in self.preview_fields + getattr(self, "download_fields", ()):
            raise Http404("unknown file field")
        obj = get_object_or_404(self.model, pk=object_id)
        file = getattr(obj, field)
        if not file:
            raise Http404("no file")
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        return FileResponse(file.open("rb"), content_type=content_type)

    def file_url(self, obj, field: str) -> str:
        opts = self.model._meta
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_file", args=[obj.pk, field])

    @admin.display(description="preview")
    def preview(self, obj):
        for field in self.preview_fields:
            if getattr(obj, field):
                return format_html(
                    '<img src="{}" alt="" style="max-height:64px;max-width:96px;border-radius:3px">',
                    self.file_url(obj, field),
                )
        return "—"
