"""Step 3: the edit sliders (autosaved as the templates' default edits), the live edit preview, the
remembered Generate settings, and starting a job.

Thin views (see ``frontend.views``): parse, call one service or selector, render.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from datasets.jobs.services import job_create
from datasets.jobs.snapshots import spec_for_template
from datasets.selectors import (
    dataset_get_for_user,
    image_get_for_user,
    image_list_for_dataset,
    job_list_for_user,
)
from datasets.services.previews import edit_preview
from frontend import presenters
from frontend.forms import (
    GenerateForm,
    PreviewForm,
    edits_from_post,
)
from frontend.views.shared import form_error_text
from imaging.errors import EditValidationError, ImagingError
from samsite.common.errors import ServiceError, error_message
from samsite.common.throttles import JOBS, PREVIEWS, scoped_throttle
from templates_app.selectors import template_get_for_user, template_list_for_dataset
from templates_app.services import template_update


@login_required
@require_http_methods(["GET", "POST"])
@scoped_throttle(JOBS, methods=("POST",))
def dataset_generate(request, dataset_id):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    templates = list(template_list_for_dataset(dataset=dataset))
    if request.method == "POST":
        form = GenerateForm(request.POST)
        if not form.is_valid():
            messages.error(request, f"Could not start the job: {form_error_text(form)}")
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
            if exc.status == 429:
                # The per-user limits: 429, as on the REST and seed APIs; the page comes back as it was, the
                # reason next to the Generate button (the form is a plain POST, so the browser shows this page).
                return _generate_page(
                    request, dataset, templates, error=f"Could not start the job: {exc.message}", status=429
                )
            messages.error(request, f"Could not start the job: {exc.message}")
            return redirect("ui-generate", dataset_id=dataset.public_id)
        return redirect("ui-job", job_id=job.public_id)
    return _generate_page(request, dataset, templates)


def _generate_page(request, dataset, templates, *, error: str = "", status: int = 200) -> HttpResponse:
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
            "generate_error": error,
        }
    )
    return render(request, "frontend/generate.html", context, status=status)


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
        return JsonResponse({"error": "invalid_settings", "detail": form_error_text(form)}, status=400)
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
    if compose not in ("stack", "each"):
        # annotate writes no image: the preview shows the layered edits and the mask outline
        compose = "stack"
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
        context["error"] = error_message(exc)
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
