"""An ASGI middleware that refuses oversize request bodies before Django reads or spools them.

Django's ASGI handler reads the whole body (into a SpooledTemporaryFile) before any view, parser or limit of
its own runs, so an anonymous 300 MiB POST to ``/api/auth/token/`` used to write a 300 MB temporary file. This
guard sits in front of it:

- a ``Content-Length`` over the path's limit is answered ``413`` JSON at once; the body is never read;
- a body without a length (chunked) or longer than it declared is counted as it arrives; past the limit the
  app is told the client disconnected (Django drops the request) and the client gets the same ``413`` JSON.

Limits (README "Configuration"): upload paths (:data:`UPLOAD_PATHS`) may send MAX_UPLOAD_REQUEST_MB, every
other path MAX_REQUEST_BODY_MB. Read per request, so settings overrides apply.
"""

from __future__ import annotations

import json
import re

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


def _too_large_body(limit: int, name: str) -> bytes:
    mb = limit // (1024 * 1024)
    return json.dumps(
        {
            "error": "request_too_large",
            "detail": f"the request body exceeds the {mb} MB limit ({name})",
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
        limit, name = body_limit(scope.get("path", ""))
        declared = None
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        if declared is not None and declared > limit:
            await _send_413(send, limit, name)
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
            await _send_413(send, limit, name)
        return None


async def _send_413(send, limit: int, name: str) -> None:
    body = _too_large_body(limit, name)
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
