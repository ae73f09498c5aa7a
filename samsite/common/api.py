"""Project-wide DRF glue: every API error is JSON with an ``error`` code, from the one table in
``samsite.common.errors``; one content negotiation for views that never answer 406."""

from __future__ import annotations

from django.core.exceptions import SuspiciousOperation
from django.http import Http404
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from samsite.common.errors import error_info


def exception_handler(exc, context):
    """The REST API's handler: the body is ``error_info(exc).body()``; headers (``WWW-Authenticate``,
    ``Retry-After``) and the transaction rollback are DRF's.

    Django's request-level refusals (oversize body, too many fields, other SuspiciousOperation) and unexpected
    exceptions return None: Django answers them (security log, ``samsite.views`` JSON error pages).
    """
    if isinstance(exc, SuspiciousOperation):
        return None
    if isinstance(exc, exceptions.Throttled) and not hasattr(exc, "scope"):
        exc.scope = getattr(context.get("view"), "throttle_scope", None)
    info = error_info(exc)
    if info is None:
        return None
    response = drf_exception_handler(exc, context)
    if response is None:  # not a DRF exception (ServiceError, imaging errors): DRF would not roll back
        set_rollback()
        response = Response(status=info.status)
    response.data = info.body()
    _render_as_json(context.get("request"))
    return response


def _render_as_json(request) -> None:
    """Errors are JSON whatever the client's Accept header asked (the browsable API stays for successes):
    ``finalize_response`` renders with the request's accepted renderer, so that is what is replaced."""
    if request is None:
        return
    renderer = JSONRenderer()
    request.accepted_renderer = renderer
    request.accepted_media_type = renderer.media_type


class LenientContentNegotiation(DefaultContentNegotiation):
    """Never a 406 before the view runs: file views get ``Accept: image/*``, old seed clients send
    ``text/event-stream`` or ``text/html``. The answer (and any error) renders with the first renderer (JSON)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except (exceptions.NotAcceptable, Http404):  # Http404: an unknown ?format= override
            return renderers[0], renderers[0].media_type
