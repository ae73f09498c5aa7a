"""Small template helpers of the pages: image URLs from the authenticated file views, durations, numbers."""

from __future__ import annotations

from django import template
from django.urls import reverse

register = template.Library()


@register.filter
def thumb_url(image) -> str:
    """The image's thumbnail (helper B's authenticated file view)."""
    return reverse("image-thumbnail", args=[image.id.hex])


@register.filter
def file_url(image) -> str:
    """The image's original file (helper B's authenticated file view)."""
    return reverse("image-file", args=[image.id.hex])


@register.filter
def display_url(image) -> str:
    """The image for <img> and <canvas>: the original, or a PNG of it when browsers cannot draw it."""
    from frontend.presenters import browser_displayable

    if browser_displayable(image):
        return file_url(image)
    return reverse("ui-image-display", args=[image.dataset_id.hex, image.id.hex])


@register.filter
def variant_url(variant) -> str:
    """The edited image; for an annotation (annotate jobs: no image), the original, shown under its mask."""
    if not variant.file:
        return display_url(variant.image)
    return reverse("api-variant-file", args=[variant.id.hex])


@register.simple_tag
def export_formats() -> tuple[str, ...]:
    """The training export formats of the job page's picker."""
    from datasets.jobs.exports import EXPORT_FORMATS

    return EXPORT_FORMATS


@register.filter
def variant_thumb_url(variant) -> str:
    """The variant's 320 px thumbnail (tiles); the full file is only for the lightbox and the download."""
    return reverse("ui-variant-thumbnail", args=[variant.id.hex])


@register.filter
def variant_mask_url(variant) -> str:
    return reverse("api-variant-mask", args=[variant.id.hex]) if variant.mask_file else ""


@register.filter
def segmenter_name(stored) -> str:
    """ "sam:vit_b:<fingerprint>" -> "SAM ViT-B", "classical:-:classical-v1" -> "classical"."""
    from frontend.presenters import segmenter_label

    return segmenter_label(str(stored or ""))


@register.filter
def zip_name(job) -> str:
    """The job ZIP's file name, as the download view sends it (``<dataset-slug>-<job-short-id>.zip``)."""
    from datasets.jobs.downloads import job_zip_filename

    return job_zip_filename(job)


@register.filter
def seconds(value) -> str:
    """A duration in seconds as "850 ms", "12.3 s", "4 min 05 s" or "1 h 02 min"."""
    if value is None:
        return "—"
    value = float(value)
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def per(value, count) -> str:
    """``seconds`` of ``value / count`` ("—" when either is missing)."""
    if value is None or not count:
        return "—"
    return seconds(float(value) / float(count))


@register.filter
def ms(value) -> str:
    if value is None:
        return "—"
    return seconds(float(value) / 1000)


@register.filter
def number(value, digits: int = 2) -> str:
    """A compact number: no trailing zeros (0.25, 1, -0.5)."""
    try:
        return f"{float(value):.{int(digits)}f}".rstrip("0").rstrip(".") or "0"
    except (TypeError, ValueError):
        return str(value)


@register.filter
def reject_reason(error: str) -> str:
    """``"not_an_image: cannot identify image file"`` -> ``"not an image: cannot identify image file"``."""
    code, sep, detail = str(error).partition(": ")
    if not sep:
        return str(error).replace("_", " ")
    return f"{code.replace('_', ' ')}: {detail}"


@register.filter
def ago(value) -> str:
    """ "just now", or Django's timesince plus "ago"."""
    from django.utils import timezone
    from django.utils.timesince import timesince

    if value is None:
        return ""
    if (timezone.now() - value).total_seconds() < 60:
        return "just now"
    return f"{timesince(value)} ago"
