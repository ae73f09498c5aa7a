"""Atomic, expiring counters shared by every process: the one home of the limits that count.

Django's cache ``incr`` is a get followed by a set (two requests racing both read 4 and both write 5), and on
the database cache it resets the key's expiry to the default timeout. Limits built on it could be passed in
parallel and expired early. Here every increment is one atomic statement that returns the new count:

- with REDIS_URL: a Lua script (INCRBY, then EXPIRE when the key has no expiry yet or ``refresh`` asks);
- otherwise the :class:`Counter` table, one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` (PostgreSQL,
  and SQLite 3.35+ for the embedded default); an expired row restarts at the increment with a new expiry.

A window's expiry is set when its count starts and kept (``refresh=False``), so "locked out for 15 minutes"
lasts 15 minutes. Callers reserve first and check the returned count (reserve-then-check), so N parallel
requests against a limit L see the counts 1..N and exactly L of them pass.

Users: the SSE connection cap (``datasets.jobs.events``), the failed-login lockout (``samsite.login_guard``)
and the rate throttles (``samsite.common.throttles``).
"""

from __future__ import annotations

import functools
import hashlib
import time

from django.conf import settings
from django.db import connections, models, router

KEY_MAX_LENGTH = 200


def _now() -> float:
    """The clock of the database counters (one function, so tests can move it)."""
    return time.time()


class Counter(models.Model):
    """One counter: its key, its count, and when it expires (Unix seconds). Expired rows are restarted on
    their next increment and deleted now and then (:func:`counters_prune`)."""

    key = models.CharField(max_length=KEY_MAX_LENGTH, primary_key=True)
    count = models.BigIntegerField(default=0)
    expires_at = models.FloatField(db_index=True, help_text="Unix time after which the count is void.")

    class Meta:
        app_label = "datasets"
        db_table = "samsite_counter"

    def __str__(self) -> str:
        return f"{self.key}={self.count}"


# --- backends ---------------------------------------------------------------------------------------------

_LUA_ADD = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[3] == '1' or redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return value
"""


@functools.lru_cache(maxsize=4)
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url)


def _redis_client():
    url = getattr(settings, "REDIS_URL", None)
    return _redis(url) if url else None


def _redis_key(key: str) -> str:
    return f"samgen:counter:{key}"


def _db():
    alias = router.db_for_write(Counter)
    return connections[alias]


def _db_add(key: str, delta: int, ttl: float, refresh: bool) -> int:
    connection = _db()
    quote = connection.ops.quote_name
    table, k, c, e = (quote(name) for name in (Counter._meta.db_table, "key", "count", "expires_at"))
    now = _now()
    # One statement, so concurrent increments serialise on the row; ``excluded`` is the row the INSERT
    # proposed, and an expired row restarts from it.
    sql = (
        f"INSERT INTO {table} ({k}, {c}, {e}) VALUES (%s, %s, %s) "
        f"ON CONFLICT ({k}) DO UPDATE SET "
        f"{c} = CASE WHEN {table}.{e} <= %s THEN excluded.{c} ELSE {table}.{c} + excluded.{c} END, "
        f"{e} = CASE WHEN {table}.{e} <= %s OR %s THEN excluded.{e} ELSE {table}.{e} END "
        f"RETURNING {c}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [key, delta, now + ttl, now, now, bool(refresh)])
        (count,) = cursor.fetchone()
    return int(count)


# --- the API ------------------------------------------------------------------------------------------------


def _check_key(key: str) -> str:
    """Keys longer than the column (a client-chosen part) are replaced by a digest."""
    if not key:
        raise ValueError("a counter needs a key")
    if len(key) > KEY_MAX_LENGTH:
        return f"{key[:100]}#{hashlib.sha256(key.encode()).hexdigest()}"
    return key


def counter_add(key: str, delta: int = 1, *, ttl: float, refresh: bool = False) -> int:
    """Add ``delta`` to ``key`` atomically and return the new count. A new (or expired) counter starts at
    ``delta`` and expires ``ttl`` seconds from now; ``refresh`` pushes the expiry to now + ttl every time."""
    key = _check_key(key)
    ttl = max(1, int(ttl))
    client = _redis_client()
    if client is not None:
        script = client.register_script(_LUA_ADD)
        return int(script(keys=[_redis_key(key)], args=[int(delta), ttl, "1" if refresh else "0"]))
    return _db_add(key, int(delta), ttl, refresh)


_LUA_SUBTRACT = """
local value = tonumber(redis.call('GET', KEYS[1]) or '0')
if value <= 0 then return 0 end
local take = math.min(value, tonumber(ARGV[1]))
return redis.call('DECRBY', KEYS[1], take)
"""


def counter_subtract(key: str, delta: int = 1) -> int | None:
    """Take ``delta`` back from a live counter, never below 0 (a release after the count expired, or
    twice, changes nothing); returns the new count, None when there is no live counter."""
    key = _check_key(key)
    client = _redis_client()
    if client is not None:
        if not client.exists(_redis_key(key)):
            return None
        return int(client.register_script(_LUA_SUBTRACT)(keys=[_redis_key(key)], args=[int(delta)]))
    from django.db.models import F
    from django.db.models.functions import Greatest

    live = Counter.objects.filter(key=key, expires_at__gt=_now())
    if not live.update(count=Greatest(F("count") - int(delta), 0)):
        return None
    return live.values_list("count", flat=True).first()


def counter_get_many(keys) -> dict[str, int]:
    """The live counts of ``keys`` (missing or expired: absent)."""
    wanted = {_check_key(key): key for key in keys if key}
    keys = list(wanted)
    if not keys:
        return {}
    client = _redis_client()
    if client is not None:
        values = client.mget([_redis_key(key) for key in keys])
        return {wanted[key]: int(value) for key, value in zip(keys, values, strict=True) if value is not None}
    rows = Counter.objects.filter(key__in=keys, expires_at__gt=_now()).values_list("key", "count")
    return {wanted[key]: count for key, count in rows}


def counter_get(key: str) -> int:
    return counter_get_many([key]).get(key, 0)


def counter_expires_in(key: str) -> float | None:
    """Seconds until ``key`` expires (None when it does not exist)."""
    key = _check_key(key)
    client = _redis_client()
    if client is not None:
        ttl = client.pttl(_redis_key(key))
        return ttl / 1000 if ttl and ttl > 0 else None
    expires = Counter.objects.filter(key=key).values_list("expires_at", flat=True).first()
    if expires is None:
        return None
    left = expires - _now()
    return left if left > 0 else None


def counter_delete(key: str) -> None:
    key = _check_key(key)
    client = _redis_client()
    if client is not None:
        client.delete(_redis_key(key))
        return
    Counter.objects.filter(key=key).delete()


def counters_prune() -> int:
    """Delete expired database counters (Redis expires its own); returns how many went."""
    if _redis_client() is not None:
        return 0
    deleted, _ = Counter.objects.filter(expires_at__lte=_now()).delete()
    return deleted
