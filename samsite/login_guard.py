"""Failed-login lockout for every login (the login pages, the admin's, the token endpoint), on atomic counters.

Attempts are counted per (username, client IP), per client IP and per username, in the shared counters
(``samsite.common.counters``: the database, or Redis when REDIS_URL is set), so every process sees the same
counts. After LOGIN_FAILURE_LIMIT failures of one username from one IP, 4x as many from one IP across
usernames, or 4x as many of one username across IPs, within LOGIN_LOCKOUT_SECONDS, every attempt there is
refused, a correct password included, for LOGIN_LOCKOUT_SECONDS from the attempt that reached the limit. A
successful login clears its (username, IP) count and gives its reservation back. Locking the pair first means
a stranger cannot lock a user out from everywhere with a few tries; the per-username limit is the backstop
against one account guessed from many addresses. The client IP is REMOTE_ADDR (the proxy in front must pass
the real address).

Enforcement is the authentication backend (:class:`LockoutBackend`), so no interface can bypass it: it
*reserves* the attempt (one atomic increment per key) before checking the password and refuses when a
reservation is past its limit. N parallel wrong passwords therefore get at most the limit checked. The views
call :func:`is_locked_out` first to answer a clear 429 instead of "invalid credentials".
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_logged_in
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver

from samsite.common.counters import (
    counter_add,
    counter_delete,
    counter_expires_in,
    counter_get_many,
    counter_subtract,
)

IP_FACTOR = 4
USERNAME_FACTOR = 4


def _client_ip(request) -> str:
    meta = getattr(request, "META", None) or {}
    return meta.get("REMOTE_ADDR") or "unknown"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _keys(request, username: str | None) -> dict[str, int]:
    """``{counter key: its limit}`` for an attempt of ``username`` from ``request``'s IP."""
    ip = _client_ip(request)
    limit = settings.LOGIN_FAILURE_LIMIT
    keys = {f"login-fail:ip:{_digest(ip)}": IP_FACTOR * limit}
    if username:
        name = username.strip().lower()
        keys[f"login-fail:pair:{_digest(f'{name}{chr(0)}{ip}')}"] = limit
        keys[f"login-fail:user:{_digest(name)}"] = USERNAME_FACTOR * limit
    return keys


def _pair_key(keys: dict[str, int]) -> str | None:
    return next((key for key in keys if key.startswith("login-fail:pair:")), None)


def is_locked_out(request, username: str | None) -> bool:
    """True when this username from this client IP, this IP, or this username has failed too often lately."""
    if request is None:
        return False
    keys = _keys(request, username)
    counts = counter_get_many(list(keys))
    return any(counts.get(key, 0) >= limit for key, limit in keys.items())


def reserve_attempt(request, username: str | None) -> dict[str, int]:
    """Count one attempt on every key (atomically) and raise PermissionDenied when any is past its limit.

    The attempt that reaches a limit starts the full lockout window on that key. Returns the keys reserved,
    for :func:`release_attempt` after a successful login."""
    timeout = settings.LOGIN_LOCKOUT_SECONDS
    keys = _keys(request, username)
    locked = False
    for key, limit in keys.items():
        count = counter_add(key, ttl=timeout)
        if count == limit:
            counter_add(key, 0, ttl=timeout, refresh=True)  # locked from now for the whole window
        locked = locked or count > limit
    if locked:
        raise PermissionDenied("locked out")
    return keys


def release_attempt(keys: dict[str, int]) -> None:
    """A successful login: its (username, IP) count is cleared and its other reservations given back."""
    for key in keys:
        if key == _pair_key(keys):
            counter_delete(key)
        else:
            counter_subtract(key)


def clear_failures(request, username: str | None) -> None:
    pair = _pair_key(_keys(request, username))
    if pair:
        counter_delete(pair)


def lockout_detail(request=None, username: str | None = None) -> dict:
    seconds = settings.LOGIN_LOCKOUT_SECONDS
    if request is not None:
        keys = _keys(request, username)
        counts = counter_get_many(list(keys))
        left = [counter_expires_in(key) for key, limit in keys.items() if counts.get(key, 0) >= limit]
        left = [value for value in left if value]
        if left:
            seconds = max(1, int(max(left) + 0.999))
    return {
        "error": "locked_out",
        "detail": f"too many failed logins (LOGIN_FAILURE_LIMIT); try again in {max(1, -(-seconds // 60))} "
        "minutes",
        "limit": "LOGIN_FAILURE_LIMIT",
        "retry_after": seconds,
    }


class LockoutBackend(ModelBackend):
    """Django's ModelBackend that first reserves the attempt and refuses a locked-out username, IP or pair.

    The only backend (a subclass rather than an extra entry: ``force_login`` and session users resolve through
    the first backend)."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return super().authenticate(request, username=username, password=password, **kwargs)
        if username is None:
            username = kwargs.get(self._username_field())
        keys = reserve_attempt(request, username if isinstance(username, str) else None)
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None:
            release_attempt(keys)
        return user

    @staticmethod
    def _username_field() -> str:
        from django.contrib.auth import get_user_model

        return get_user_model().USERNAME_FIELD


# Connected at import; Django imports the backends (this module) before it can send the signal.
@receiver(user_logged_in, dispatch_uid="samsite.login_guard.succeeded")
def _on_success(sender, request, user, **kwargs):
    if request is not None:
        clear_failures(request, user.get_username())
