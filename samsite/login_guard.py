"""Failed-login lockout for the login page and the token endpoint, on the shared cache.

Failures are counted per (username, client IP) and per client IP, in the default cache (database, or Redis
when REDIS_URL is set), so every process sees the same counts. After LOGIN_FAILURE_LIMIT failures of one
username from one IP (or 4x as many from one IP across usernames) within LOGIN_LOCKOUT_SECONDS, every attempt
from there is refused, a correct password included, until the window ends; a successful login clears its
(username, IP) count. Locking the pair rather than the bare username means a stranger cannot lock a user out
from everywhere. The client IP is REMOTE_ADDR (the proxy in front must pass the real address).

Enforcement is the authentication backend (:class:`LockoutBackend`): ``authenticate()`` stops at
its PermissionDenied, so no interface can bypass it. The views call :func:`lockout_response` first to answer
a clear 429 instead of "invalid credentials".
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver

IP_FACTOR = 4


def _client_ip(request) -> str:
    meta = getattr(request, "META", None) or {}
    return meta.get("REMOTE_ADDR") or "unknown"


def _keys(request, username: str | None) -> tuple[str | None, str]:
    ip = _client_ip(request)
    pair = None
    if username:
        digest = hashlib.sha256(f"{username.strip().lower()}\x00{ip}".encode()).hexdigest()[:32]
        pair = f"login-fail:pair:{digest}"
    return pair, f"login-fail:ip:{hashlib.sha256(ip.encode()).hexdigest()[:32]}"


def is_locked_out(request, username: str | None) -> bool:
    """True when this username from this client IP (or this IP at all) has failed too often lately."""
    if request is None:
        return False
    pair, ip_key = _keys(request, username)
    limit = settings.LOGIN_FAILURE_LIMIT
    counts = cache.get_many([key for key in (pair, ip_key) if key])
    return counts.get(pair, 0) >= limit or counts.get(ip_key, 0) >= IP_FACTOR * limit


def record_failure(request, username: str | None) -> None:
    timeout = settings.LOGIN_LOCKOUT_SECONDS
    for key in _keys(request, username):
        if key is None:
            continue
        cache.add(key, 0, timeout)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout)


def clear_failures(request, username: str | None) -> None:
    pair, _ip_key = _keys(request, username)
    if pair:
        cache.delete(pair)


def lockout_detail() -> dict:
    seconds = settings.LOGIN_LOCKOUT_SECONDS
    return {
        "error": "locked_out",
        "detail": f"too many failed logins (LOGIN_FAILURE_LIMIT); try again in {max(1, seconds // 60)} minutes",
        "limit": "LOGIN_FAILURE_LIMIT",
        "retry_after": seconds,
    }


class LockoutBackend(ModelBackend):
    """Django's ModelBackend that first refuses any attempt from a locked-out (username, IP) or IP.

    The only backend (a subclass rather than an extra entry: ``force_login`` and session users resolve through
    the first backend)."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if is_locked_out(request, username):
            raise PermissionDenied("locked out")
        return super().authenticate(request, username=username, password=password, **kwargs)


# Connected at import; Django imports the backends (this module) before it can send either signal.
@receiver(user_login_failed, dispatch_uid="samsite.login_guard.failed")
def _on_failure(sender, credentials, request=None, **kwargs):
    if request is not None:
        record_failure(request, credentials.get("username"))


@receiver(user_logged_in, dispatch_uid="samsite.login_guard.succeeded")
def _on_success(sender, request, user, **kwargs):
    if request is not None:
        clear_failures(request, user.get_username())
