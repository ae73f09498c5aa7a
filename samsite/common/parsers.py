"""One JSON parser for every interface, with a nesting limit.

Python's ``json`` recurses once per nesting level, so ``[[[[...`` 100k deep raises RecursionError (a 500, and
with DEBUG a debug page). Every JSON body of the project is parsed here instead: the REST API (DRF's default
parser), the seed-compatible views (``legacy.http``) and the pages' JSON endpoints (``loads_limited``). A body
nested deeper than MAX_JSON_DEPTH is a ParseError, which every interface answers as a 400 JSON error.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONTooDeep(ValueError):
    """The JSON document nests deeper than MAX_JSON_DEPTH."""


def max_json_depth() -> int:
    return settings.MAX_JSON_DEPTH


def check_depth(value: Any, limit: int) -> None:
    """Raise JSONTooDeep when ``value`` nests lists/objects deeper than ``limit`` (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise JSONTooDeep(f"JSON nested deeper than {limit} levels (MAX_JSON_DEPTH)")
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def loads_limited(data: bytes | str) -> Any:
    """``json.loads`` with the depth limit. Raises ValueError (JSONTooDeep for nesting, JSONDecodeError for
    malformed text); never RecursionError."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise JSONTooDeep(f"JSON nested deeper than {max_json_depth()} levels (MAX_JSON_DEPTH)") from None
    check_depth(value, max_json_depth())
    return value


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with the nesting limit: too deep is ``ParseError`` (400) naming MAX_JSON_DEPTH."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            value = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {max_json_depth()} levels") from None
        try:
            check_depth(value, max_json_depth())
        except JSONTooDeep as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        return value
