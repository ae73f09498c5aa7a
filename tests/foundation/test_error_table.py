"""The one error table (``samsite.common.errors``) and the handlers derived from it: the REST API's, the
seed-compatible API's (with its overrides) and the site's JSON error pages.

Where the copies disagreed before the table, the answers chosen are pinned here (see the README).
"""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404
from django.test import RequestFactory
from rest_framework import exceptions

from imaging.errors import (
    BoxValidationError,
    CheckpointError,
    EditValidationError,
    ImageDecodeError,
    PointValidationError,
    SegmenterUnavailable,
)
from legacy.http import seed_error
from samsite.common.api import exception_handler
from samsite.common.errors import UNEXPECTED, ErrorInfo, ServiceError, error_info, error_message
from samsite.views import bad_request

BOTH = pytest.mark.parametrize("seed", [False, True], ids=["rest", "seed"])


@BOTH
@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            ServiceError("no_points", "at least one point", status=400, field="points"),
            ErrorInfo(400, "no_points", "at least one point", {"field": "points"}),
        ),
        (ServiceError("gone", status=404), ErrorInfo(404, "gone", "gone")),
        (SegmenterUnavailable("no checkpoint"), ErrorInfo(503, "sam_model_not_loaded", "no checkpoint")),
        (CheckpointError("truncated"), ErrorInfo(503, "sam_model_not_loaded", "truncated")),
        (
            EditValidationError("brightness", "out of range"),
            ErrorInfo(400, "invalid_edits", "brightness: out of range", {"field": "brightness"}),
        ),
        (
            PointValidationError(2, "x_norm missing"),
            ErrorInfo(400, "invalid_points", "point 2: x_norm missing", {"index": 2}),
        ),
        (ImageDecodeError("not an image"), ErrorInfo(400, "invalid_image", "not an image")),
        (BoxValidationError("zero width"), ErrorInfo(400, "invalid_input", "zero width")),
        (Http404("dataset not found"), ErrorInfo(404, "not_found", "dataset not found")),
        (Http404(), ErrorInfo(404, "not_found", "not found")),
        (exceptions.NotFound(), ErrorInfo(404, "not_found", "Not found.")),
        (RequestDataTooBig("too big"), ErrorInfo(413, "request_too_large", "too big")),
        (TooManyFilesSent("files"), ErrorInfo(400, "too_many_files", "files")),
        (
            exceptions.MethodNotAllowed("PUT"),
            ErrorInfo(405, "method_not_allowed", 'Method "PUT" not allowed.'),
        ),
    ],
)
def test_rows_shared_by_every_interface(exc, expected, seed):
    assert error_info(exc, seed=seed) == expected


@pytest.mark.parametrize(
    ("exc", "rest", "seed"),
    [
        (TooManyFieldsSent("fields"), ("too_many_fields", 400), ("too_many_files", 400)),
        (exceptions.NotAuthenticated(), ("not_authenticated", 401), ("unauthorized", 401)),
        (exceptions.AuthenticationFailed(), ("authentication_failed", 401), ("unauthorized", 401)),
        (exceptions.ParseError("JSON parse error - x"), ("parse_error", 400), ("invalid_json", 400)),
        (exceptions.ParseError("Multipart form parse error"), ("parse_error", 400), ("bad_request", 400)),
        (exceptions.PermissionDenied(), ("permission_denied", 403), ("forbidden", 403)),
        (PermissionDenied(), ("permission_denied", 403), ("forbidden", 403)),
        (exceptions.ValidationError({"name": ["required"]}), ("validation_error", 400), ("invalid", 400)),
    ],
)
def test_the_seed_api_keeps_its_own_codes_where_they_differed(exc, rest, seed):
    rest_info, seed_info = error_info(exc), error_info(exc, seed=True)
    assert (rest_info.code, rest_info.status) == rest
    assert (seed_info.code, seed_info.status) == seed


def test_throttled_names_the_limit_of_its_scope():
    exc = exceptions.Throttled(wait=7)
    exc.scope = "previews"
    for seed in (False, True):
        assert error_info(exc, seed=seed).body() == {
            "error": "throttled",
            "detail": "Request was throttled. Expected available in 7 seconds.",
            "retry_after": 7,
            "limit": "THROTTLE_PREVIEWS",
        }


def test_an_unmapped_exception_is_unexpected_everywhere():
    assert error_info(RuntimeError("boom")) is None
    assert seed_error(RuntimeError("boom")) == (500, UNEXPECTED.body())
    assert exception_handler(RuntimeError("boom"), {}) is None  # Django answers (and logs) it


def test_pages_get_a_message_for_any_exception():
    assert error_message(ServiceError("invalid_name", "the name is empty")) == "the name is empty"
    assert error_message(SegmenterUnavailable("SAM needs a checkpoint")) == "SAM needs a checkpoint"
    assert error_message(RuntimeError("secret path /srv/x")) == "unexpected server error"


# --- where the copies disagreed before: the answers chosen ---------------------------------------------


@pytest.mark.django_db
def test_rest_answers_imaging_errors_with_the_specific_codes_the_seed_api_used():
    """The REST handler mapped every imaging error to 400 ``invalid_input``; now 503 ``sam_model_not_loaded``
    (as the schema documents), ``invalid_edits`` (field), ``invalid_points`` (index), ``invalid_image``."""
    unavailable = exception_handler(SegmenterUnavailable("no checkpoint"), {})
    edits = exception_handler(EditValidationError("gamma", "out of range"), {})

    assert (unavailable.status_code, unavailable.data["error"]) == (503, "sam_model_not_loaded")
    assert (edits.status_code, edits.data) == (
        400,
        {"error": "invalid_edits", "detail": "gamma: out of range", "field": "gamma"},
    )


def test_the_seed_api_answers_djangos_permission_denied_403_not_500():
    assert seed_error(PermissionDenied("not yours")) == (403, {"error": "forbidden", "detail": "not yours"})


def test_rest_answers_an_empty_404_with_the_seed_apis_detail():
    response = exception_handler(Http404(), {})
    assert (response.status_code, response.data) == (404, {"error": "not_found", "detail": "not found"})


def test_the_site_400_page_names_too_many_files_like_the_apis():
    """``samsite.views.bad_request`` said ``too_many_fields`` for too many files; now ``too_many_files``."""
    request = RequestFactory().post("/api/datasets/")
    files = bad_request(request, TooManyFilesSent("too many files"))
    fields = bad_request(request, TooManyFieldsSent("too many fields"))

    assert (files.status_code, files.content) == (
        400,
        b'{"error": "too_many_files", "detail": "too many files"}',
    )
    assert fields.content == b'{"error": "too_many_fields", "detail": "too many fields"}'
