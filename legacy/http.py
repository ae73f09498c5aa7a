"""The HTTP layer of the seed-compatible API: one base view for auth, body parsing and JSON errors.

Every endpoint of ``shared/design/SEED_API.md`` derives from :class:`SeedView`, so the rules hold everywhere:

- authentication is the project's (``Authorization: Token <key>`` or a session cookie; session requests are
  CSRF-checked by DRF's ``SessionAuthentication``); anonymous requests get 401 ``{"error": "unauthorized"}``;
- a JSON body is parsed whatever its Content-Type (old PowerShell scripts forget the header), and a body that
  is not a JSON object is a 400 ``invalid_json``;
- every error is JSON ``{"error": <code>, "detail": <message>, ...extras}``: ServiceError keeps its code and
  status, imaging errors map to the seed codes, anything unexpected is a logged 500 JSON, never an HTML page.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.http import Http404
from drf_spectacular.openapi import AutoSchema
from rest_framework import exceptions
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets.models import Dataset, DatasetImage
from datasets.selectors import dataset_get_for_user, image_get_for_user
from legacy.models import LegacySession
from legacy.selectors import legacy_session_get_for_user
from samsite.common.api import LenientContentNegotiation
from samsite.common.errors import UNEXPECTED, ServiceError, error_info
from samsite.common.parsers import JSONParser
from samsite.common.throttles import ScopeThrottle

logger = logging.getLogger(__name__)


class AnyJSONParser(JSONParser):
    """Parses the body as JSON whatever the Content-Type (``curl -d`` without ``-H`` sends form-urlencoded)."""

    media_type = "*/*"


def seed_error(exc: BaseException) -> tuple[int, dict]:
    """``(status, body)`` for an exception raised while serving a seed endpoint (also used by the streams):
    the project's error table with the seed overrides; anything unmapped is a logged 500 JSON."""
    info = error_info(exc, seed=True)
    if info is None:
        logger.error("seed API: unexpected error", exc_info=exc)
        info = UNEXPECTED
    return info.status, info.body()


def seed_exception_handler(exc: Exception, context: Mapping) -> Response:
    if isinstance(exc, exceptions.Throttled):
        exc.scope = getattr(context.get("view"), "throttle_scope", None)
    try:
        status, body = seed_error(exc)
    except Exception:  # rendering the error must never turn it into an HTML 500
        logger.exception("seed API: could not render %r", exc)
        status, body = UNEXPECTED.status, UNEXPECTED.body()
    response = Response(body, status=status)
    auth_header = getattr(exc, "auth_header", None)
    if status == 401 and auth_header:
        response["WWW-Authenticate"] = auth_header
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        response["Retry-After"] = str(int(exc.wait))
    return response


class _UndocumentedSchema(AutoSchema):
    """The seed endpoints are a compatibility surface described by SEED_API.md, not part of the OpenAPI schema."""

    def is_excluded(self) -> bool:
        return True


class SeedView(APIView):
    """Base of every seed endpoint (see the module docstring). Subclasses set ``throttle_scope`` to throttle."""

    schema = _UndocumentedSchema()
    renderer_classes = [JSONRenderer]
    parser_classes = [JSONParser, AnyJSONParser]
    content_negotiation_class = LenientContentNegotiation
    throttle_scope: str | None = None

    def get_throttles(self):
        # The API's scope and cache key: the seed API, the REST API and the pages share one budget per user.
        return [ScopeThrottle(self.throttle_scope)] if self.throttle_scope else []

    def get_exception_handler(self):
        return seed_exception_handler

    # --- request parsing -------------------------------------------------------------------------------

    def body(self) -> Mapping[str, Any]:
        """The request body as a mapping (JSON object or form fields); ``{}`` for an empty body."""
        data = self.request.data
        if not isinstance(data, Mapping):
            raise ServiceError("invalid_json", "the body must be a JSON object")
        return data

    def param(self, name: str, *, required_code: str | None = None) -> Any:
        """A field from the body, else the query string; with ``required_code``, a missing one is a 400."""
        value = self.body().get(name)
        if value in (None, ""):
            value = self.request.query_params.get(name)
        if value in (None, "") and required_code:
            raise ServiceError(required_code, f"{name} is required")
        return value

    # --- ownership-checked lookups, answering the seed codes ---------------------------------------------

    def get_dataset(self, dataset_id: object) -> Dataset:
        if dataset_id in (None, ""):
            raise ServiceError("dataset_id_required", "dataset_id is required")
        try:
            return dataset_get_for_user(user=self.request.user, dataset_id=dataset_id)
        except Http404:
            raise ServiceError("dataset_not_found", "dataset not found", status=404) from None

    def get_image(self, image_id: object, *, dataset: Dataset) -> DatasetImage:
        if image_id in (None, ""):
            raise ServiceError("image_id_required", "image_id is required")
        try:
            return image_get_for_user(user=self.request.user, image_id=image_id, dataset=dataset)
        except Http404:
            raise ServiceError("image_not_found", "image not found", status=404) from None

    def get_session(self, image_id: object) -> LegacySession:
        if image_id in (None, ""):
            raise ServiceError("image_id_required", "image_id is required")
        try:
            return legacy_session_get_for_user(user=self.request.user, session_id=image_id)
        except Http404:
            raise ServiceError("image_not_found", "image not found", status=404) from None


class SeedUploadView(SeedView):
    """A seed endpoint taking multipart uploads."""

    parser_classes = [MultiPartParser, FormParser]
    throttle_scope = "uploads"


def as_bool(value: object) -> bool:
    """Form and JSON flags as old clients send them: true/1/"1"/"true"/"yes"/"on"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return False
