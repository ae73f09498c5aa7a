"""Throttling of the expensive paths, whichever interface reaches them (rates in
settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], README "Configuration").

Scopes: ``uploads`` (uploads, prewarm, precompute), ``previews`` (segment, edit previews, template masks),
``jobs`` (job creation and retry), ``downloads`` (job ZIPs and exports), ``login`` (token and login attempts, per IP). The REST API, the seed API and
the pages count against the same per-user budget: one cache key per scope and user (DRF's
``throttle_<scope>_<user pk>``), counted in a window of the rate's period by the atomic shared counters
of ``samsite.common.counters`` (database, or Redis when REDIS_URL is set): one increment per request, checked
after it is counted, so parallel requests cannot all pass, and a limit holds across workers and interfaces.

- DRF viewsets: ``throttle_classes = [ActionScopedRateThrottle]`` and ``throttle_scopes = {"create": JOBS}``.
- DRF APIViews: ``throttle_classes = [ScopedRateThrottle]`` (this module's) with ``throttle_scope = JOBS``.
- Plain Django views (the pages): ``@scoped_throttle(PREVIEWS)``.

A refusal is a 429 JSON ``{"error": "throttled", "detail", "limit": "THROTTLE_<SCOPE>", "retry_after"}``.
"""

from __future__ import annotations

import functools
import math

from django.core.exceptions import ImproperlyConfigured
from django.http import JsonResponse
from rest_framework import throttling
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from samsite.common.counters import counter_add, counter_expires_in

UPLOADS = "uploads"
PREVIEWS = "previews"
JOBS = "jobs"
LOGIN = "login"
DOWNLOADS = "downloads"


def rate_for(scope: str) -> str:
    # DRF reads the rates once at import (SimpleRateThrottle.THROTTLE_RATES); reading them per request
    # keeps settings overrides (tests, reloads) effective.
    try:
        return api_settings.DEFAULT_THROTTLE_RATES[scope]
    except KeyError:
        raise ImproperlyConfigured(f"No throttle rate set for the {scope!r} scope") from None


def limit_name(scope: str) -> str:
    """The setting that configures ``scope``'s rate (named in 429 answers)."""
    return f"THROTTLE_{scope.upper()}"


class CountingRateThrottle(SimpleRateThrottle):
    """DRF's SimpleRateThrottle counted atomically: a window of the rate's duration per cache key, opened by
    the key's first request (so two requests never straddle a clock boundary into two windows).

    DRF keeps a list of timestamps in the cache and writes it back (get + set: parallel requests all pass).
    Here each request is one atomic increment of the key's counter, refused when its count is past the rate;
    the counter expires with its window."""

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        count = counter_add(self.key, ttl=self.duration)
        return count <= self.num_requests

    def wait(self):
        key = getattr(self, "key", None)
        if key is None:
            return None
        left = counter_expires_in(key)
        return left if left is not None else float(self.duration)

    def get_ident(self, request):
        # The connection's address, as the login lockout uses: DRF's default would take a client-supplied
        # X-Forwarded-For (a new identity per request) when no NUM_PROXIES is configured.
        return request.META.get("REMOTE_ADDR") or "unknown"


class ScopedRateThrottle(throttling.ScopedRateThrottle, CountingRateThrottle):
    """DRF's ScopedRateThrottle (``view.throttle_scope``) on the atomic counters; rates read per request."""

    def get_rate(self):
        return rate_for(self.scope)


class ActionScopedRateThrottle(ScopedRateThrottle):
    """ScopedRateThrottle whose scope is looked up by action: ``view.throttle_scopes = {"upload": "uploads"}``.

    Actions without a scope are not throttled, so a viewset can limit its expensive actions only.
    """

    def allow_request(self, request, view):
        scope = (getattr(view, "throttle_scopes", None) or {}).get(getattr(view, "action", None))
        if not scope:
            return True
        view.throttle_scope = scope
        return super().allow_request(request, view)


class ScopeThrottle(CountingRateThrottle):
    """A fixed-scope throttle with DRF's ScopedRateThrottle cache keys (so budgets are shared with the API):
    per user when signed in, per client IP otherwise. Works on DRF and plain Django requests alike."""

    cache_format = throttling.ScopedRateThrottle.cache_format

    def __init__(self, scope: str):
        self.scope = scope
        super().__init__()

    def get_rate(self):
        return rate_for(self.scope)

    def get_cache_key(self, request, view):
        user = getattr(request, "user", None)
        ident = user.pk if user is not None and user.is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


def throttled_response(scope: str, wait: float | None) -> JsonResponse:
    retry_after = math.ceil(wait) if wait is not None else None
    response = JsonResponse(
        {
            "error": "throttled",
            "detail": f"too many requests ({rate_for(scope)}, {limit_name(scope)}); "
            f"try again in {retry_after if retry_after is not None else 'a few'} seconds",
            "limit": limit_name(scope),
            "retry_after": retry_after,
        },
        status=429,
    )
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def scoped_throttle(scope: str, *, methods: tuple[str, ...] | None = None):
    """Decorate a plain Django view so it counts against (and is refused by) the API's ``scope`` budget.

    ``methods`` limits the throttle to those HTTP methods (e.g. only the POST of a page that also renders).
    Apply it inside ``login_required`` so the budget is the user's, not the anonymous IP's.
    """

    def decorator(view_func):
        @functools.wraps(view_func)
        def wrapper(request, *args, **kwargs):
            if methods is None or request.method in methods:
                throttle = ScopeThrottle(scope)
                if not throttle.allow_request(request, None):
                    return throttled_response(scope, throttle.wait())
            return view_func(request, *args, **kwargs)

        return wrapper

    return decorator
