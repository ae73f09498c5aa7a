from __future__ import annotations

from django.contrib import admin

from templates_app.models import Template


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "dataset", "image_class", "points_count", "position", "created")
    list_filter = ("image_class",)
    search_fields = ("name", "dataset__name", "id")
    raw_id_fields = ("dataset", "reference_image")
    readonly_fields = ("id", "created", "updated")
    list_select_related = ("dataset",)
