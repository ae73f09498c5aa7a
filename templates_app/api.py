"""REST API of templates: list/create under a dataset (save order), retrieve/change/delete by id."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.response import Response

from datasets.models import Dataset, DatasetImage
from datasets.selectors import dataset_get_for_user, image_get_for_user
from samsite.common.errors import ServiceError
from samsite.common.fields import ErrorSerializer
from templates_app.models import Template
from templates_app.selectors import template_get_for_user, template_list_for_dataset
from templates_app.serializers import TemplateSerializer, TemplateWriteSerializer
from templates_app.services import template_create, template_delete, template_update

ERRORS = {400: ErrorSerializer, 404: ErrorSerializer}
_WRITE_ERRORS = (
    "Errors (400): `no_points` (neither a positive point nor a box), `invalid_points` (with `index`), "
    "`invalid_box`, `invalid_mask_choice`, `invalid_class`, `invalid_edits` (with "
    "`field`), `invalid_reference_image`, `invalid_name`."
)


def _reference_image(user, dataset: Dataset, image_id: object) -> DatasetImage | None:
    """The reference image, which must be one of ``dataset``'s (a foreign or unknown id is a 400, not a 404:
    it is a bad field of a request on a resource the user does own)."""
    if image_id in (None, ""):
        return None
    try:
        return image_get_for_user(user=user, image_id=image_id, dataset=dataset)
    except Http404:
        raise ServiceError(
            "invalid_reference_image",
            "the reference image must be an image of the same dataset",
            field="reference_image",
        ) from None


def _write_data(request, *, partial: bool) -> dict:
    serializer = TemplateWriteSerializer(data=request.data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


@extend_schema(tags=["templates"])
@extend_schema_view(
    list=extend_schema(
        summary="The dataset's templates in save order (the order stacking applies them in).",
        parameters=[
            OpenApiParameter("dataset_id", str, OpenApiParameter.PATH, description="Dataset id (hex).")
        ],
        responses={200: TemplateSerializer(many=True), 404: ErrorSerializer},
    ),
    create=extend_schema(
        summary="Save a template at the end of the save order.",
        description=_WRITE_ERRORS,
        parameters=[
            OpenApiParameter("dataset_id", str, OpenApiParameter.PATH, description="Dataset id (hex).")
        ],
        request=TemplateWriteSerializer,
        responses={201: TemplateSerializer, **ERRORS},
    ),
)
class DatasetTemplatesViewSet(viewsets.GenericViewSet):
    """Templates of one of your datasets."""

    serializer_class = TemplateSerializer
    queryset = Template.objects.none()
    pagination_class = None  # a dataset has a handful of templates; the UI wants them all, in order

    def get_serializer_class(self):
        # the browsable API's POST form renders the input (responses use TemplateSerializer explicitly)
        if self.request is not None and self.request.method in ("POST", "PUT", "PATCH"):
            return TemplateWriteSerializer
        return super().get_serializer_class()

    def _dataset(self) -> Dataset:
        return dataset_get_for_user(user=self.request.user, dataset_id=self.kwargs["dataset_id"])

    def list(self, request, dataset_id=None):
        templates = template_list_for_dataset(dataset=self._dataset())
        return Response(TemplateSerializer(templates, many=True).data)

    def create(self, request, dataset_id=None):
        dataset = self._dataset()
        data = _write_data(request, partial=False)
        template = template_create(
            dataset=dataset,
            points=data.get("points"),
            box=data.get("box"),
            mask_choice=data.get("mask_choice", "best"),
            name=data.get("name") or "",
            label=data.get("label"),
            image_class=data.get("image_class") or "",
            reference_image=_reference_image(request.user, dataset, data.get("reference_image")),
            default_edits=data.get("default_edits"),
        )
        return Response(TemplateSerializer(template).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["templates"])
@extend_schema_view(
    retrieve=extend_schema(responses={200: TemplateSerializer, 404: ErrorSerializer}),
    partial_update=extend_schema(
        summary="Change any of name, label, points, box, mask_choice, image_class, reference_image, "
        "default_edits.",
        description=_WRITE_ERRORS,
        request=TemplateWriteSerializer,
        responses={200: TemplateSerializer, **ERRORS},
    ),
    destroy=extend_schema(responses={204: None, 404: ErrorSerializer}),
)
class TemplateViewSet(viewsets.GenericViewSet):
    """One template of one of your datasets."""

    serializer_class = TemplateSerializer
    queryset = Template.objects.none()
    http_method_names = ["get", "patch", "delete", "head", "options"]
    lookup_url_kwarg = "template_id"

    def get_serializer_class(self):
        if self.request is not None and self.request.method in ("POST", "PUT", "PATCH"):
            return TemplateWriteSerializer  # the browsable API's PATCH form
        return super().get_serializer_class()

    def get_object(self) -> Template:
        return template_get_for_user(user=self.request.user, template_id=self.kwargs["template_id"])

    def retrieve(self, request, template_id=None):
        return Response(TemplateSerializer(self.get_object()).data)

    def partial_update(self, request, template_id=None):
        template = self.get_object()
        changes = _write_data(request, partial=True)
        if "reference_image" in changes:
            changes["reference_image"] = _reference_image(
                request.user, template.dataset, changes["reference_image"]
            )
        if "points" in changes and changes["points"] is None:
            changes["points"] = []  # "no points" then needs a box, which the service checks
        return Response(TemplateSerializer(template_update(template=template, **changes)).data)

    def destroy(self, request, template_id=None):
        template_delete(template=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
