"""Step 2: the template canvas (reference images, segment previews for the posted points), saved templates
and their mask thumbnails, the dataset's model, and the help page of the segmenter the canvas uses.

Thin views (see ``frontend.views``): parse, call one service or selector, render.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from datasets.prompts import box_from_input, points_from_input
from datasets.segmentation import available_models, site_checkpoint_name
from datasets.selectors import (
    dataset_get_for_user,
    image_get_for_user,
    image_list_for_dataset,
)
from datasets.services.datasets import dataset_set_checkpoint
from datasets.services.previews import segment_preview
from frontend import presenters
from frontend.forms import (
    TemplateSaveForm,
)
from frontend.views.shared import form_error_text
from imaging.errors import ImagingError
from samsite.common.errors import ServiceError, error_info
from samsite.common.parsers import loads_limited
from samsite.common.throttles import PREVIEWS, scoped_throttle
from templates_app.selectors import template_get_for_user, template_list_for_dataset
from templates_app.services import template_create, template_delete, template_update

logger = logging.getLogger(__name__)


CLASS_FILTERS = [("", "All"), ("pass", "Pass"), ("fail", "Fail"), ("none", "No class")]


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


@login_required
@require_GET
@scoped_throttle(PREVIEWS)
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
    except (ServiceError, ImagingError) as exc:
        info = error_info(exc)  # the APIs' answer: 503 sam_model_not_loaded, invalid_points, ...
        return JsonResponse(info.body(), status=info.status)
    return JsonResponse(presenters.segment_json(preview))


@login_required
@require_POST
def template_save(request, dataset_id):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    form = TemplateSaveForm(request.POST)
    templates_url = reverse("ui-templates", args=[dataset.public_id])
    if not form.is_valid():
        messages.error(request, f"The template was not saved: {form_error_text(form)}")
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
