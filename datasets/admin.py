from __future__ import annotations

from django.contrib import admin

from datasets.admin_files import FilePreviewAdminMixin
from datasets.models import Dataset, DatasetImage, GenerationJob, JobItem, Variant


class DatasetImageInline(admin.TabularInline):
    model = DatasetImage
    fields = ("position", "filename", "width", "height", "image_class", "is_grayscale", "sha256")
    readonly_fields = ("position", "filename", "width", "height", "is_grayscale", "sha256")
    extra = 0
    show_change_link = True
    can_delete = False


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "image_total", "template_total", "job_total", "created")
    list_filter = ("created",)
    search_fields = ("name", "owner__username", "id")
    readonly_fields = ("id", "created", "updated")
    raw_id_fields = ("owner",)
    inlines = [DatasetImageInline]

    @admin.display(description="images")
    def image_total(self, obj):
        return obj.images.count()

    @admin.display(description="templates")
    def template_total(self, obj):
        return obj.templates.count()

    @admin.display(description="jobs")
    def job_total(self, obj):
        return obj.jobs.count()


@admin.register(DatasetImage)
class DatasetImageAdmin(FilePreviewAdminMixin, admin.ModelAdmin):
    preview_fields = ("thumbnail",)
    download_fields = ("file",)
    list_display = (
        "preview",
        "filename",
        "dataset",
        "width",
        "height",
        "image_class",
        "is_grayscale",
        "created",
    )
    list_filter = ("image_class", "is_grayscale")
    search_fields = ("filename", "original_filename", "sha256", "dataset__name")
    readonly_fields = ("id", "preview", "sha256", "width", "height", "size_bytes", "created", "updated")
    raw_id_fields = ("dataset",)
    list_select_related = ("dataset",)


class JobItemInline(admin.TabularInline):
    model = JobItem
    fields = ("index", "image", "status", "attempts", "ms", "cache_hit", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = (
        "short_id",
        "dataset",
        "owner",
        "status",
        "compose",
        "source",
        "progress",
        "variant_count",
        "encoder_calls",
        "created",
        "duration",
    )
    list_filter = ("status", "compose", "source", "output_format")
    search_fields = ("id", "dataset__name", "owner__username")
    raw_id_fields = ("dataset", "owner")
    list_select_related = ("dataset", "owner")
    readonly_fields = (
        "id",
        "segmenter",
        "total_items",
        "succeeded_items",
        "failed_items",
        "skipped_items",
        "variant_count",
        "encoder_calls",
        "cache_hits",
        "timings_ms",
        "worker",
        "heartbeat",
        "started_at",
        "finished_at",
        "created",
        "updated",
    )
    inlines = [JobItemInline]

    def has_add_permission(self, request):
        # Jobs are made by the app (pages, API, CLI, seed API) from a dataset's templates, never by hand.
        return False

    def has_change_permission(self, request, obj=None):
        # A finished job is a record of what ran: read-only. A queued or running one may still be edited
        # (e.g. cancel_requested) by staff who have the permission.
        if obj is not None and obj.is_terminal:
            return False
        return super().has_change_permission(request, obj)

    @admin.display(description="job")
    def short_id(self, obj):
        return obj.id.hex[:8]

    @admin.display(description="done/total")
    def progress(self, obj):
        return f"{obj.processed_items}/{obj.total_items}"

    @admin.display(description="duration")
    def duration(self, obj):
        ms = obj.duration_ms
        return "—" if ms is None else f"{ms / 1000:.1f} s"


@admin.register(JobItem)
class JobItemAdmin(admin.ModelAdmin):
    list_display = ("job", "index", "image", "status", "attempts", "ms", "cache_hit")
    list_filter = ("status", "cache_hit")
    search_fields = ("job__id", "image__filename", "error")
    raw_id_fields = ("job", "image")
    readonly_fields = ("id", "created", "updated")
    list_select_related = ("job", "image")

    def has_add_permission(self, request):
        return False  # items are made with their job

    def has_change_permission(self, request, obj=None):
        # An item of a finished job is part of its record: read-only, like the job itself.
        if obj is not None and obj.job.is_terminal:
            return False
        return super().has_change_permission(request, obj)


@admin.register(Variant)
class VariantAdmin(FilePreviewAdminMixin, admin.ModelAdmin):
    preview_fields = ("file",)
    download_fields = ("mask_file",)
    exclude = ("annotations",)  # RLE strings: read them through the exports, not a form
    list_display = ("preview", "image", "job", "template_key", "score", "area", "created")
    list_filter = ("created",)
    search_fields = ("image__filename", "job__id", "template_key")
    raw_id_fields = ("job", "image", "template")
    readonly_fields = (
        "id",
        "preview",
        "sha256",
        "score",
        "stability",
        "flags",
        "area",
        "width",
        "height",
        "created",
        "updated",
    )
    list_select_related = ("job", "image")

    def has_add_permission(self, request):
        return False  # variants are made by the job runner

    def has_change_permission(self, request, obj=None):
        # A finished job's outputs are what it made: read-only (the job admin's rule).
        if obj is not None and obj.job.is_terminal:
            return False
        return super().has_change_permission(request, obj)
