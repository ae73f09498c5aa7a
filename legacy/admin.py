from __future__ import annotations

from django.contrib import admin

from datasets.admin_files import FilePreviewAdminMixin
from legacy.models import Component, LegacySession


class ComponentInline(admin.TabularInline):
    model = Component
    fields = ("number", "name", "area", "score", "bbox")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(LegacySession)
class LegacySessionAdmin(FilePreviewAdminMixin, admin.ModelAdmin):
    preview_fields = ("image",)
    list_display = (
        "preview",
        "short_id",
        "owner",
        "filename",
        "width",
        "height",
        "component_total",
        "created",
    )
    search_fields = ("id", "owner__username", "filename")
    raw_id_fields = ("owner",)
    readonly_fields = ("id", "preview", "sha256", "width", "height", "created", "updated")
    inlines = [ComponentInline]

    @admin.display(description="session")
    def short_id(self, obj):
        return obj.id.hex[:8]

    @admin.display(description="components")
    def component_total(self, obj):
        return obj.components.count()


@admin.register(Component)
class ComponentAdmin(FilePreviewAdminMixin, admin.ModelAdmin):
    preview_fields = ("mask",)
    list_display = ("preview", "name", "session", "number", "area", "score", "created")
    search_fields = ("name", "session__id")
    raw_id_fields = ("session",)
    readonly_fields = ("id", "preview", "created", "updated")
