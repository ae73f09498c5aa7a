"""``GET /api/``: the REST API's root, listing every endpoint group (DRF's browsable API in a browser, JSON for
clients; anonymous callers get the usual 401 JSON error).

Listed by hand rather than from the router: the endpoints come from three URL modules (datasets, jobs,
templates) plus the token, schema and seed-compatible routes, and a group is only useful with the
per-object routes spelled out (``{id}`` where an id goes). ``tests/frontend/test_api_root.py`` checks that
every URL named here resolves, so a renamed route fails a test instead of leaving a dead link.
"""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

#: group -> (what it is for, [(method(s), URL name, kwargs placeholder names)])
GROUPS: dict[str, tuple[str, list[tuple[str, str, tuple[str, ...]]]]] = {
    "auth": (
        "POST {username, password} for a token; then send 'Authorization: Token <key>'.",
        [("POST", "api-token", ())],
    ),
    "datasets": (
        "Your datasets (the history of the web UI).",
        [("GET, POST", "/api/datasets/", ()), ("GET, PATCH, DELETE", "dataset-detail", ("id",))],
    ),
    "images": (
        "Upload (multipart 'images' repeated and/or 'zip'), list, classify and delete images; their files.",
        [
            ("GET, POST", "dataset-images", ("id",)),
            ("GET, PATCH, DELETE", "image-detail", ("id",)),
            ("GET", "image-file", ("id",)),
            ("GET", "image-thumbnail", ("id",)),
        ],
    ),
    "templates": (
        "Point templates (normalised coordinates) of a dataset.",
        [
            ("GET, POST", "dataset-templates", ("id",)),
            ("GET, PATCH, DELETE", "template-detail", ("id",)),
        ],
    ),
    "previews": (
        "Segment points into three candidate masks, preview edits, pre-compute embeddings.",
        [
            ("POST", "image-segment", ("id",)),
            ("POST", "dataset-preview", ("id",)),
            ("POST", "dataset-prewarm", ("id",)),
        ],
    ),
    "jobs": (
        "Generation jobs: create, follow, cancel, retry.",
        [
            ("GET, POST", "api-dataset-jobs", ("id",)),
            ("GET", "api-job-list", ()),
            ("GET", "api-job-detail", ("id",)),
            ("POST", "api-job-cancel", ("id",)),
            ("POST", "api-job-retry", ("id",)),
            ("GET", "api-job-items", ("id",)),
            ("GET", "api-job-events", ("id",)),
        ],
    ),
    "results": (
        "Variants, their masks and the job's ZIP (with manifest.json).",
        [
            ("GET", "api-job-variants", ("id",)),
            ("GET", "api-variant-file", ("id",)),
            ("GET", "api-variant-mask", ("id",)),
            ("GET", "api-job-download", ("id",)),
        ],
    ),
    "schema": (
        "The OpenAPI 3 schema and its Swagger UI.",
        [("GET", "api-schema", ()), ("GET", "api-docs", ())],
    ),
    "seed": (
        "The old tool's API, field for field (also under /api/sam/...).",
        [
            ("POST", "seed-dataset-init", ()),
            ("POST", "seed-apply-stream", ()),
            ("POST", "seed-init", ()),
        ],
    ),
}

_PLACEHOLDER = "00000000000000000000000000000000"


def endpoint_path(name: str, params: tuple[str, ...]) -> str:
    """The route's path with ``{id}`` where an id goes (reversed with a dummy id, then substituted).

    A ``name`` starting with "/" is a literal path: the router's "dataset-list" shares its name with the
    pages' dataset list, so it cannot be reversed by name.
    """
    if name.startswith("/"):
        return name
    path = reverse(name, args=[_PLACEHOLDER] * len(params))
    return path.replace(_PLACEHOLDER, "{id}")


class ApiRootView(APIView):
    """Every endpoint group of this API, with a short description and its routes."""

    @extend_schema(exclude=True)
    def get(self, request):
        groups = {}
        for group, (description, routes) in GROUPS.items():
            endpoints = []
            for methods, name, params in routes:
                path = endpoint_path(name, params)
                endpoints.append(
                    {
                        "methods": methods,
                        "path": path,
                        # A link only where it can be followed as is (no id to fill in).
                        **({"url": request.build_absolute_uri(path)} if not params else {}),
                    }
                )
            groups[group] = {"description": description, "endpoints": endpoints}
        return Response(
            {
                "name": "SAM Bulk Dataset Generator API",
                "authentication": "Token (Authorization: Token <key>) or the session of the web UI",
                "errors": 'always JSON: {"error": "<code>", "detail": "<message>"}',
                "groups": groups,
            }
        )
