"""The login pages and the token endpoint, throttled per client IP and guarded by the failed-login lockout.

The site's login page, the browsable API's (``/api/auth/login/``), the admin's (``/admin/login/``) and the
token endpoint all count against the ``login`` scope (THROTTLE_LOGIN, per IP: they are anonymous); the lockout
(``samsite.login_guard``) is the authentication backend, and the site's page and the token endpoint answer a
locked-out login with a clear 429 before checking the password.
"""

from __future__ import annotations

import functools

from django.contrib.auth import views as auth_views
from django.http import JsonResponse
from drf_spectacular.utils import extend_schema
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.settings import api_settings

from samsite.common.throttles import LOGIN, ScopedRateThrottle, ScopeThrottle, throttled_response
from samsite.login_guard import is_locked_out, lockout_detail


class TokenThrottle(ScopedRateThrottle):
    scope = LOGIN

    def allow_request(self, request, view):
        view.throttle_scope = LOGIN
        return super().allow_request(request, view)

    def get_rate(self):
        return ScopeThrottle(LOGIN).get_rate()


@extend_schema(tags=["auth"])
class TokenView(ObtainAuthToken):
    """``POST {username, password}`` -> ``{token}``; 429 ``throttled`` / ``locked_out`` when over the limits."""

    throttle_classes = [TokenThrottle]
    # ObtainAuthToken sets DRF's own parsers (plain json.loads: RecursionError on deep JSON); use the project's.
    parser_classes = api_settings.DEFAULT_PARSER_CLASSES

    def post(self, request, *args, **kwargs):
        username = request.data.get("username") if hasattr(request.data, "get") else None
        username = username if isinstance(username, str) else None
        if is_locked_out(request, username):
            body = lockout_detail(request, username)
            return JsonResponse(body, status=429, headers={"Retry-After": str(body["retry_after"])})
        return super().post(request, *args, **kwargs)


def login_throttled(view_func):
    """Count a login view's POSTs against the per-IP ``login`` scope (429 JSON beyond it); for the login views
    that are not this module's own (the admin's)."""

    @functools.wraps(view_func)
    def wrapper(request, *args, **kwargs):
        if request.method == "POST":
            throttle = ScopeThrottle(LOGIN)
            if not throttle.allow_request(request, None):
                return throttled_response(LOGIN, throttle.wait())
        return view_func(request, *args, **kwargs)

    return wrapper


class LoginView(auth_views.LoginView):
    """Django's login page (``next`` must stay on this site: Django checks it with
    ``url_has_allowed_host_and_scheme``) with the IP throttle and the lockout on POST."""

    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        throttle = ScopeThrottle(LOGIN)
        if not throttle.allow_request(request, None):
            return throttled_response(LOGIN, throttle.wait())
        if is_locked_out(request, request.POST.get("username")):
            context = self.get_context_data(
                form=self.get_form(), lockout=lockout_detail(request, request.POST.get("username"))["detail"]
            )
            return self.render_to_response(context, status=429)
        return super().post(request, *args, **kwargs)
