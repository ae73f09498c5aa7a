"""An ASGI middleware that refuses oversize request bodies before Django reads or spools them.

Django's ASGI handler reads the whole body (into a SpooledTemporaryFile) before any view, parser or limit of
its own runs, so an anonymous 300 MiB POST to ``/api/auth/token/`` used to write a 300 MB temporary file. This
guard sits in front of it:

- a ``Content-Length`` over the path's limit is answered ``413`` JSON at once; the body is never read;
- a body without a length (chunked) or longer than it declared is counted as it arrives; past the limit the
  app is told the client disconnected (Django drops the request) and the client gets the same ``413`` JSON.

Limits (README "Configuration"): upload paths (:data:`UPLOAD_PATHS`) may send MAX_UPLOAD_REQUEST_MB when the
request carries valid credentials (a known API token, or the session cookie of a signed-in session: one
indexed lookup, made only when the body could exceed the small limit); anonymous requests and every other path
get MAX_REQUEST_BODY_MB, so an anonymous 300 MiB upload is refused before a byte of it is read instead of being
spooled to answer 401. Read per request, so settings overrides apply.
"""

from __future__ import annotations

import json
import re

from asgiref.sync import sync_to_async
from django.conf import settings

#: Paths whose bodies are multipart image uploads (REST, seed-compatible API, pages).
UPLOAD_PATHS = re.compile(
    r"^/(?:"
    r"api/datasets/[^/]+/images/?"
    r"|(?:api/)?sam/(?:init|dataset/init|batch_process|batch_process_stream)/?"
    r"|datasets/[^/]+/upload/?"
    r")$"
)


def body_limit(path: str) -> tuple[int, str]:
    """``(max bytes, setting name)`` for a request to ``path``."""
    if UPLOAD_PATHS.match(path):
        return settings.MAX_UPLOAD_REQUEST_MB * 1024 * 1024, "MAX_UPLOAD_REQUEST_MB"
    return settings.MAX_REQUEST_BODY_MB * 1024 * 1024, "MAX_REQUEST_BODY_MB"


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


def _credentials_valid(authorization: str | None, session_key: str | None) -> bool:
    """Whether the request's token or session cookie belongs to an active user (DRF's two schemes)."""
    if authorization:
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() == "token" and key.strip():
            from rest_framework.authtoken.models import Token

            if Token.objects.filter(key=key.strip(), user__is_active=True).exists():
                return True
    if session_key:
        from importlib import import_module

        store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        try:
            return bool(store.get("_auth_user_id"))
        except Exception:  # a broken or foreign session is no credential
            return False
    return False


async def _signed_in(scope) -> bool:
    raw_auth = _header(scope, b"authorization")
    raw_cookie = _header(scope, b"cookie")
    authorization = raw_auth.decode("latin-1") if raw_auth else None
    session_key = None
    if raw_cookie:
        from django.http.cookie import parse_cookie

        session_key = parse_cookie(raw_cookie.decode("latin-1")).get(settings.SESSION_COOKIE_NAME) or None
    if not authorization and not session_key:
        return False
    return await sync_to_async(_checked_in_worker, thread_sensitive=False)(authorization, session_key)


def _checked_in_worker(authorization: str | None, session_key: str | None) -> bool:
    # Outside Django's request cycle: open and close the worker thread's connection as a request would.
    from django.db import close_old_connections

    close_old_connections()
    try:
        return _credentials_valid(authorization, session_key)
    finally:
        close_old_connections()


ANONYMOUS_HINT = "; uploads larger than that need a signed-in user (an API token or a session)"


async def request_body_limit(scope, declared: int | None) -> tuple[int, str, str]:
    """:func:`body_limit` for this request, and a hint for the 413: an upload path's large limit only with
    valid credentials."""
    limit, name = body_limit(scope.get("path", ""))
    small = settings.MAX_REQUEST_BODY_MB * 1024 * 1024
    could_exceed = declared is None or declared > small
    if name == "MAX_UPLOAD_REQUEST_MB" and could_exceed and not await _signed_in(scope):
        return small, "MAX_REQUEST_BODY_MB", ANONYMOUS_HINT
    return limit, name, ""


def _too_large_body(limit: int, name: str, hint: str = "") -> bytes:
    mb = limit // (1024 * 1024)
    return json.dumps(
        {
            "error": "request_too_large",
            "detail": f"the request body exceeds the {mb} MB limit ({name})" + hint,
            "limit": name,
            "max_bytes": limit,
        }
    ).encode()


class BodySizeLimitMiddleware:
    """Wrap an ASGI app; see the module docstring."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = None
        raw_length = _header(scope, b"content-length")
        if raw_length is not None:
            try:
                declared = int(raw_length)
            except ValueError:
                declared = None
        limit, name, hint = await request_body_limit(scope, declared)
        if declared is not None and declared > limit:
            await _send_413(send, limit, name, hint)
            return None

        state = {"received": 0, "tripped": False, "started": False}

        async def limited_receive():
            if state["tripped"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["tripped"] = True
                    # Django's handler treats a disconnect while reading as an aborted request and stops.
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message):
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)
        if state["tripped"] and not state["started"]:
            await _send_413(send, limit, name, hint)
        return None


async def _send_413(send, limit: int, name: str, hint: str = "") -> None:
    body = _too_large_body(limit, name, hint)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
