"""Step 1 and the datasets list: create, rename, delete datasets; upload images, set their class, delete them.

Thin views (see ``frontend.views``): parse, call one service or selector, render.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from datasets.models import ImageClass
from datasets.selectors import (
    dataset_get_for_user,
    dataset_list_for_user,
    image_count_for_dataset,
    image_get_for_user,
    image_list_for_dataset,
)
from datasets.services.datasets import dataset_create, dataset_delete, dataset_rename
from datasets.services.images import image_delete, image_set_class
from datasets.services.uploads import images_upload
from frontend import presenters
from frontend.forms import (
    DatasetNameForm,
    ImageClassForm,
)
from samsite.common.errors import ServiceError
from samsite.common.throttles import UPLOADS, scoped_throttle


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
    duplicates, rejected = presenters.split_rejected(
        result.rejected if result is not None else [], result.created if result is not None else []
    )
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
        count = image_count_for_dataset(dataset=dataset)
        return render(
            request, "frontend/partials/image_deleted.html", {"dataset": dataset, "image_count": count}
        )
    return redirect("ui-upload", dataset_id=dataset.public_id)
