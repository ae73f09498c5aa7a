"""HTML pages. Thin: parse, call one service or selector, render.

Every object comes through the ownership accessors (``dataset_get_for_user`` and friends), so another user's
id answers 404 exactly like a missing one. htmx requests get fragments, plain requests full pages or
redirects (so every form also works without JavaScript).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from datasets.jobs.events import job_channel, job_last_event_id, sse_response
from datasets.jobs.relay import parse_event_id
from datasets.jobs.services import job_cancel, job_create, job_retry_failed
from datasets.jobs.snapshots import spec_for_template
from datasets.models import ImageClass
from datasets.prompts import box_from_input, points_from_input
from datasets.segmentation import available_models, site_checkpoint_name
from datasets.selectors import (
    dataset_get_for_user,
    dataset_list_for_user,
    image_get_for_user,
    image_list_for_dataset,
    job_get_for_user,
    job_list_for_user,
    variant_get_for_user,
)
from datasets.services.datasets import dataset_create, dataset_delete, dataset_rename, dataset_set_checkpoint
from datasets.services.images import image_delete, image_set_class
from datasets.services.previews import edit_preview, segment_preview
from datasets.services.thumbnails import thumbnail_read, variant_thumbnail_ensure
from datasets.services.uploads import images_upload
from datasets.throttles import JOBS, PREVIEWS, UPLOADS, scoped_throttle
from frontend import live, presenters
from frontend.forms import (
    DatasetNameForm,
    GenerateForm,
    ImageClassForm,
    PreviewForm,
    TemplateSaveForm,
    edits_from_post,
)
from imaging.errors import EditValidationError, ImagingError, SegmenterUnavailable
from samsite.errors import ServiceError
from samsite.parsers import loads_limited
from templates_app.selectors import template_get_for_user, template_list_for_dataset
from templates_app.services import template_create, template_delete, template_update

logger = logging.getLogger(__name__)

CLASS_FILTERS = [("", "All"), ("pass", "Pass"), ("fail", "Fail"), ("none", "No class")]


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ServiceError):
        return exc.message
    return str(exc)


def _form_error(form) -> str:
    return "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())


# --- help ------------------------------------------------------------------------------------------------


@login_required
@require_GET
def segmenter_help(request):
    """What segments the masks here, what that means for their quality, and how to get SAM (the header chip)."""
    return render(
        request,
        "frontend/help_segmenter.html",
        {
            "models_dir": settings.SAM_MODELS_DIR,
            "models": presenters.SAM_MODELS,
            "backend_setting": settings.SAM_BACKEND,
        },
    )


# --- datasets ----------------------------------------------------------------------------------------------


@login_required
@require_GET
def dataset_list(request):
    datasets = list(dataset_list_for_user(user=request.user))
    presenters.attach_thumbnail_strips(datasets)
    return render(request, "frontend/dataset_list.html", {"datasets": datasets, "nav": "datasets"})


@login_required
@require_POST
def dataset_new(request):
    form = DatasetNameForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give the dataset a name (up to 200 characters).")
        return redirect("dataset-list")
    try:
        dataset = dataset_create(owner=request.user, name=form.cleaned_data["name"])
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect("dataset-list")
    return redirect("ui-upload", dataset_id=dataset.public_id)


@login_required
@require_POST
def dataset_rename_view(request, dataset_id):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    form = DatasetNameForm(request.POST)
    error = ""
    if form.is_valid():
        try:
            dataset = dataset_rename(dataset=dataset, name=form.cleaned_data["name"])
        except ServiceError as exc:
            error = exc.message
    else:
        error = "Give the dataset a name (up to 200 characters)."
    if request.htmx:
        # 200 even when refused: the fragment carries the error (django-htmx's DEBUG script would swap a 400
        # in as the whole page).
        return render(request, "frontend/partials/dataset_title.html", {"dataset": dataset, "error": error})
    if error:
        messages.error(request, error)
    return redirect(_local_next(request, reverse("ui-upload", args=[dataset.public_id])))


def _local_next(request, fallback: str) -> str:
    """The posted ``next`` when it is a URL of this site (no open redirect), else ``fallback``."""
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return fallback


@login_required
@require_POST
def dataset_delete_view(request, dataset_id):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    name = dataset.name
    dataset_delete(dataset=dataset)
    messages.success(request, f"Deleted dataset “{name}”.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("dataset-list"))
    return redirect("dataset-list")


@login_required
@require_GET
def dataset_home(request, dataset_id):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    return redirect("ui-upload", dataset_id=dataset.public_id)


# --- step 1: upload ----------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
@scoped_throttle(UPLOADS, methods=("POST",))
def dataset_upload(request, dataset_id):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    if request.method == "POST":
        return _upload(request, dataset)
    images = list(image_list_for_dataset(dataset=dataset))
    context = presenters.workspace_context(dataset, step="upload")
    context.update(
        {
            "images": images,
            "class_choices": ImageClass.choices,
            "max_upload_mb": settings.MAX_UPLOAD_MB,
            "max_images": settings.MAX_IMAGES_PER_DATASET,
        }
    )
    return render(request, "frontend/upload.html", context)


def _upload(request, dataset):
    files = request.FILES.getlist("images")
    archives = request.FILES.getlist("zip")
    if len(archives) > 1:
        error, result = "Upload one ZIP archive at a time.", None
    else:
        try:
            result = images_upload(dataset=dataset, files=files, archive=archives[0] if archives else None)
            error = ""
        except ServiceError as exc:
            error, result = presenters.upload_error_text(exc), None
    images = list(image_list_for_dataset(dataset=dataset))
    duplicates, rejected = presenters.split_rejected(result.rejected if result is not None else [])
    context = {
        "dataset": dataset,
        "result": result,
        "duplicates": duplicates,
        "rejected": rejected,
        "error": error,
        "images": images,
        "class_choices": ImageClass.choices,
        "oob": True,
    }
    if not request.htmx and not request.headers.get("X-Requested-With"):
        if error:
            messages.error(request, error)
        elif result is not None:
            messages.success(request, presenters.upload_summary(result.created, duplicates, rejected))
        return redirect("ui-upload", dataset_id=dataset.public_id)
    response = render(request, "frontend/partials/upload_result.html", context)
    if error:
        response.status_code = 400
    return response


@login_required
@require_POST
def image_class_view(request, dataset_id, image_id):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    image = image_get_for_user(user=request.user, image_id=image_id, dataset=dataset)
    form = ImageClassForm(request.POST)
    error = ""
    if form.is_valid():
        image = image_set_class(image=image, image_class=form.cleaned_data["image_class"])
    else:
        error = "Choose pass, fail or no class."
    if request.htmx:
        return render(
            request,
            "frontend/partials/image_tile.html",
            {"dataset": dataset, "image": image, "class_choices": ImageClass.choices, "error": error},
        )
    return redirect("ui-upload", dataset_id=dataset.public_id)


@login_required
@require_POST
def image_delete_view(request, dataset_id, image_id):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    image = image_get_for_user(user=request.user, image_id=image_id, dataset=dataset)
    image_delete(image=image)
    if request.htmx:
        count = dataset.images.count()
        return render(
            request, "frontend/partials/image_deleted.html", {"dataset": dataset, "image_count": count}
        )
    return redirect("ui-upload", dataset_id=dataset.public_id)


# --- step 2: templates -------------------------------------------------------------------------------------


@login_required
@require_GET
def image_display(request, dataset_id, image_id):
    """The image in a format every browser draws: the original file when it is one, else a PNG of it (TIFF)."""
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    image = image_get_for_user(user=request.user, image_id=image_id, dataset=dataset)
    if presenters.browser_displayable(image):
        return redirect("image-file", image_id=image.public_id)
    response = HttpResponse(presenters.display_png(image), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


@login_required
@require_GET
def dataset_templates(request, dataset_id):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    templates = list(template_list_for_dataset(dataset=dataset))
    editing = None
    if request.GET.get("template"):
        editing = template_get_for_user(
            user=request.user, template_id=request.GET["template"], dataset=dataset
        )
    images = list(image_list_for_dataset(dataset=dataset))
    class_filter = request.GET.get("class", "")
    if class_filter not in ("pass", "fail", "none"):
        class_filter = ""
    reference = None
    if request.GET.get("image"):
        reference = image_get_for_user(user=request.user, image_id=request.GET["image"], dataset=dataset)
    elif editing is not None and editing.reference_image_id:
        reference = editing.reference_image
    else:
        reference = presenters.first_matching(images, class_filter)
    context = presenters.workspace_context(dataset, step="templates")
    context.update(
        {
            "templates": templates,
            "images": images,
            "shown_images": presenters.filter_images(images, class_filter),
            "class_filter": class_filter,
            "class_filters": CLASS_FILTERS,
            "reference": reference,
            "editing": editing,
            "initial_points": editing.points if editing is not None else [],
            "initial_box": editing.box if editing is not None else None,
            "mask_choice": editing.mask_choice if editing is not None else "best",
            "mask_choices": [("best", "best score"), ("0", "1"), ("1", "2"), ("2", "3")],
            "models": [m for m in available_models() if m.error is None],
            "site_model": site_checkpoint_name(),
            "name_placeholder": f"Template {len(templates) + 1}",
        }
    )
    return render(request, "frontend/templates.html", context)


@login_required
@require_POST
@scoped_throttle(PREVIEWS)
def image_segment(request, dataset_id, image_id):
    """JSON for the canvas: the candidate masks (best first) for the posted points, as PNG data."""
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    image = image_get_for_user(user=request.user, image_id=image_id, dataset=dataset)
    try:
        body = loads_limited(request.body or b"{}")
        raw_points = body.get("points") if isinstance(body, dict) else None
        raw_box = body.get("box") if isinstance(body, dict) else None
    except ValueError as exc:
        return JsonResponse({"error": "invalid_json", "detail": f"the body is not JSON ({exc})"}, status=400)
    try:
        box = box_from_input(raw_box)
        # A box alone is a prompt (Box mode on the canvas, before any point).
        points = (
            []
            if box is not None and not raw_points
            else points_from_input(raw_points, require_positive=False)
        )
        preview = segment_preview(image=image, points=points, box=box)
    except ServiceError as exc:
        return JsonResponse({"error": exc.code, "detail": exc.message, **exc.extra}, status=exc.status)
    except SegmenterUnavailable as exc:
        return JsonResponse({"error": "segmenter_unavailable", "detail": str(exc)}, status=503)
    except ImagingError as exc:
        return JsonResponse({"error": "invalid_input", "detail": str(exc)}, status=400)
    return JsonResponse(presenters.segment_json(preview))


@login_required
@require_POST
def template_save(request, dataset_id):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    form = TemplateSaveForm(request.POST)
    templates_url = reverse("ui-templates", args=[dataset.public_id])
    if not form.is_valid():
        messages.error(request, f"The template was not saved: {_form_error(form)}")
        return redirect(templates_url)
    data = form.cleaned_data
    reference = None
    if data["reference_image"]:
        reference = image_get_for_user(user=request.user, image_id=data["reference_image"], dataset=dataset)
    try:
        if data["template"]:
            template = template_get_for_user(user=request.user, template_id=data["template"], dataset=dataset)
            template = template_update(
                template=template,
                name=data["name"] or template.name,
                points=data["points"],
                box=data["box"],
                mask_choice=data["mask_choice"] or "best",
                image_class=data["image_class"],
                reference_image=reference,
            )
            messages.success(request, f"Updated template “{template.name}”.")
        else:
            template = template_create(
                dataset=dataset,
                points=data["points"],
                box=data["box"],
                mask_choice=data["mask_choice"] or "best",
                name=data["name"],
                image_class=data["image_class"],
                reference_image=reference,
            )
            messages.success(request, f"Saved template “{template.name}”.")
    except ServiceError as exc:
        messages.error(request, f"The template was not saved: {exc.message}")
        query = f"?image={reference.public_id}" if reference else ""
        return redirect(templates_url + query)
    query = f"?image={reference.public_id}" if reference else ""
    return redirect(templates_url + query)


@login_required
@require_POST
def dataset_model(request, dataset_id):
    """The model select of the templates page: the dataset's checkpoint (blank: the site's)."""
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    try:
        dataset_set_checkpoint(dataset=dataset, checkpoint=request.POST.get("checkpoint", ""))
        messages.success(request, f"Model: {dataset.checkpoint or 'the site default'}.")
    except ServiceError as exc:
        messages.error(request, f"The model was not changed: {exc.message}")
    return redirect(reverse("ui-templates", args=[dataset.public_id]))


@login_required
@require_POST
def template_delete_view(request, dataset_id, template_id):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    template = template_get_for_user(user=request.user, template_id=template_id, dataset=dataset)
    name = template.name
    template_delete(template=template)
    if request.htmx:
        return HttpResponse("")
    messages.success(request, f"Deleted template “{name}”.")
    return redirect("ui-templates", dataset_id=dataset.public_id)


@login_required
@require_GET
@scoped_throttle(PREVIEWS)
def template_mask(request, dataset_id, template_id):
    """A small PNG of the template's reference image with its best mask tinted (the saved-templates list)."""
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    template = template_get_for_user(user=request.user, template_id=template_id, dataset=dataset)
    etag = f'"{template.id.hex}-{int(template.updated.timestamp() * 1000)}"'
    if request.headers.get("If-None-Match") == etag:
        return HttpResponse(status=304)
    try:
        data = presenters.template_mask_png(template)
    except (ServiceError, ImagingError) as exc:
        logger.info("no mask thumbnail for template %s: %s", template.id, exc)
        data = None
    if data is None:
        return HttpResponse(status=204)
    response = HttpResponse(data, content_type="image/png")
    response["ETag"] = etag
    response["Cache-Control"] = "private, max-age=0, must-revalidate"
    return response


# --- step 3: edits and generate ----------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
@scoped_throttle(JOBS, methods=("POST",))
def dataset_generate(request, dataset_id):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    templates = list(template_list_for_dataset(dataset=dataset))
    if request.method == "POST":
        form = GenerateForm(request.POST)
        if not form.is_valid():
            messages.error(request, f"Could not start the job: {_form_error(form)}")
            return redirect("ui-generate", dataset_id=dataset.public_id)
        chosen = [(template, edits_from_post(request.POST, template.id.hex)) for template in templates]
        try:
            job = job_create(
                dataset=dataset,
                owner=request.user,
                templates=chosen,
                compose=form.cleaned_data["compose"],
                output_format=form.cleaned_data["output_format"],
                export_mask=form.cleaned_data["export_mask"],
                source="ui",
            )
        except ServiceError as exc:
            messages.error(request, f"Could not start the job: {exc.message}")
            return redirect("ui-generate", dataset_id=dataset.public_id)
        return redirect("ui-job", job_id=job.public_id)
    images = list(image_list_for_dataset(dataset=dataset))
    preview_image = None
    if request.GET.get("image"):
        preview_image = image_get_for_user(user=request.user, image_id=request.GET["image"], dataset=dataset)
    elif images:
        preview_image = images[0]
    last_job = job_list_for_user(user=request.user, dataset=dataset).first()
    initial = presenters.generate_settings(request.session, dataset, last_job)
    all_gray = bool(images) and all(image.is_grayscale for image in images)
    context = presenters.workspace_context(dataset, step="generate")
    context.update(
        {
            "templates": templates,
            "template_rows": presenters.template_edit_rows(templates, grayscale=all_gray),
            "images": images,
            "gray_count": sum(1 for image in images if image.is_grayscale),
            "all_gray": all_gray,
            "preview_image": preview_image,
            "form": GenerateForm(initial=initial),
            "compose": initial["compose"],
            "counts": presenters.variant_counts(images, templates),
            "jobs": list(job_list_for_user(user=request.user, dataset=dataset)[:10]),
        }
    )
    return render(request, "frontend/generate.html", context)


@login_required
@require_POST
def generate_settings_view(request, dataset_id):
    """Remember compose, format and export-masks of this dataset's Generate card (in the session).

    The session (database-backed, so every process sees it) rather than a column: it is this user's
    unsaved form state, not part of the dataset, and it needs no migration; a job, once started, records
    its own settings, and the page falls back to the last job's when the session has none.
    """
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    form = GenerateForm(request.POST)
    if not form.is_valid():
        return JsonResponse({"error": "invalid_settings", "detail": _form_error(form)}, status=400)
    presenters.generate_settings_store(request.session, dataset, form.cleaned_data)
    return HttpResponse(status=204)


@login_required
@require_POST
@scoped_throttle(PREVIEWS)
def preview_view(request, dataset_id):
    """The live preview: the chosen image with the posted slider values applied (fragment)."""
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    form = PreviewForm(request.POST)
    form.is_valid()
    image_id = form.cleaned_data.get("preview_image")
    compose = form.cleaned_data.get("compose") or "stack"
    context = {"dataset": dataset, "image": None, "after": None, "error": "", "note": ""}
    if not image_id:
        context["note"] = "Upload images to see a preview."
        return render(request, "frontend/partials/preview.html", context)
    image = image_get_for_user(user=request.user, image_id=image_id, dataset=dataset)
    context["image"] = image
    templates = list(template_list_for_dataset(dataset=dataset))
    if not templates:
        context["note"] = "Save a template in step 2 to see its edits here."
        return render(request, "frontend/partials/preview.html", context)
    # Refusals answer 200 with the error in the fragment (and next to the field): django-htmx's DEBUG
    # script replaces the whole document with any 400 response.
    specs = []
    for template in templates:
        try:
            specs.append(spec_for_template(template, edits_from_post(request.POST, template.id.hex)))
        except EditValidationError as exc:
            context["error"] = str(exc)
            context["field_error"] = presenters.field_error(template, exc.field, str(exc))
            return render(request, "frontend/partials/preview.html", context)
    try:
        result = edit_preview(image=image, specs=specs, compose=compose)
    except (ServiceError, ImagingError) as exc:
        context["error"] = _error_text(exc)
        return render(request, "frontend/partials/preview.html", context)
    if result is None:
        context["note"] = "No template applies to this image (their class filters exclude it)."
    else:
        context["after"] = presenters.preview_data_url(result.rgb)
        context["outline"] = presenters.outline_data_url(result.mask)
        context["template_names"] = list(result.template_names)
    return render(request, "frontend/partials/preview.html", context)


@login_required
@require_POST
def template_edits_view(request, dataset_id, template_id):
    """Autosave of one template's sliders as its default edits (so reload and Back keep them)."""
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    template = template_get_for_user(user=request.user, template_id=template_id, dataset=dataset)
    try:
        template = template_update(
            template=template, default_edits=edits_from_post(request.POST, template.id.hex)
        )
    except ServiceError as exc:
        # 200 with the error (see preview_view): nothing is saved, the message sits next to the field.
        field = exc.extra.get("field", "")
        return render(
            request,
            "frontend/partials/edits_saved.html",
            {
                "template": template,
                "error": exc.message,
                "field_error": presenters.field_error(template, field, exc.message),
                "fields": presenters.edit_field_ids(template),
            },
        )
    return render(
        request,
        "frontend/partials/edits_saved.html",
        {"template": template, "error": "", "fields": presenters.edit_field_ids(template)},
    )


# --- jobs --------------------------------------------------------------------------------------------------


@login_required
@require_GET
def dataset_jobs(request, dataset_id):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    jobs = list(job_list_for_user(user=request.user, dataset=dataset))
    context = presenters.workspace_context(dataset, step="jobs")
    context["jobs"] = jobs
    return render(request, "frontend/jobs.html", context)


@login_required
@require_GET
def job_detail(request, job_id):
    job = job_get_for_user(user=request.user, job_id=job_id)
    # The event id first, then the state: an event in between is replayed (tiles are swapped by id, so a
    # replay is harmless), never lost.
    last_event_id = job_last_event_id(job)
    job.refresh_from_db()
    context = presenters.workspace_context(job.dataset, step="jobs")
    context.update(presenters.job_context(job))
    context.update(
        {
            "last_event_id": last_event_id,
            "jobs": list(job_list_for_user(user=request.user, dataset=job.dataset)[:20]),
        }
    )
    return render(request, "frontend/job.html", context)


def _job_action(request, job_id, action, success_message: str):
    """Run one job service on the user's job; its refusal becomes a page message, never an error page."""
    job = job_get_for_user(user=request.user, job_id=job_id)
    try:
        action(job=job)
        messages.info(request, success_message)
    except ServiceError as exc:
        messages.error(request, exc.message)
    return redirect("ui-job", job_id=job.public_id)


@login_required
@require_POST
def job_cancel_view(request, job_id):
    return _job_action(
        request, job_id, job_cancel, "Cancel requested: the job stops after the current image."
    )


@login_required
@require_POST
@scoped_throttle(JOBS)
def job_retry_view(request, job_id):
    return _job_action(request, job_id, job_retry_failed, "The failed images are queued again.")


@login_required
def job_events(request, job_id):
    """The job page's SSE stream (session auth): the job's events after ``lastEventId`` (query or header),
    rendered as HTML fragments by ``frontend.live``. The ownership accessor runs first (404 for a foreign job)."""
    job = job_get_for_user(user=request.user, job_id=job_id)
    last = request.headers.get("Last-Event-ID") or request.GET.get("lastEventId")
    after = parse_event_id(last, job_channel(job.id))
    return sse_response(request, live.page_event_stream(job.id, after=after))


@login_required
@require_GET
def variant_thumbnail(request, variant_id):
    """The job page's tile image: a 320 px thumbnail of the variant (made once, then read from storage).

    Ownership as for the full file (another user's variant is a 404). The name carries the content hash, so
    the browser may keep it for good.
    """
    variant = variant_get_for_user(user=request.user, variant_id=variant_id)
    try:
        thumbnail = variant_thumbnail_ensure(variant=variant)
        data = thumbnail_read(thumbnail=thumbnail)
    except (ImagingError, OSError) as exc:
        logger.warning("no thumbnail for variant %s: %s", variant.id, exc)
        return JsonResponse(
            {"error": "thumbnail_unavailable", "detail": "the variant's file could not be read"}, status=404
        )
    response = HttpResponse(data, content_type=thumbnail.content_type)
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    return response
