"""Throttling per viewset action (scopes and rates in settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]).

Counters live in the default cache, which settings make shared by every process (database or Redis), so a
limit holds across workers. DRF's docs are clear that throttling is about fairness, not security.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle

UPLOADS = "uploads"
PREVIEWS = "previews"


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

    def get_rate(self):
        # DRF reads the rates once at import (SimpleRateThrottle.THROTTLE_RATES); reading them per request
        # keeps settings overrides (tests, reloads) effective.
        try:
            return api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        except KeyError:
            raise ImproperlyConfigured(f"No throttle rate set for the {self.scope!r} scope") from None
