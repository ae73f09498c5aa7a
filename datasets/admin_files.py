"""Admin helpers: thumbnails served through an admin-only view (media is never public)."""

from __future__ import annotations

from pathlib import PurePosixPath

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from datasets.image_io import OPAQUE_CONTENT_TYPE, served_content_type
from datasets.jobs.downloads import harden_file_response


class FilePreviewAdminMixin:
    """Adds ``<admin url>/<pk>/file/<field>/`` and a ``preview(obj)`` column.

    ``preview_fields`` lists the FileFields to preview, first non-empty wins. The file view requires what the
    change page requires to see the object: ``has_view_permission(request, obj)`` of this ModelAdmin (staff
    alone is not enough). Its Content-Type comes from the stored suffix, which uploads take from the decoded
    format; anything else is an ``application/octet-stream`` attachment; always ``nosniff``.
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
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        file = getattr(obj, field)
        if not file:
            raise Http404("no file")
        content_type = served_content_type(file.name)
        attachment = content_type is None
        response = FileResponse(
            file.open("rb"),
            content_type=content_type or OPAQUE_CONTENT_TYPE,
            as_attachment=attachment,
            filename=PurePosixPath(file.name).name if attachment else None,
        )
        return harden_file_response(response)

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
