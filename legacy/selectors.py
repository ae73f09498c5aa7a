"""Legacy session reads, scoped to their owner."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser

from legacy.models import LegacySession
from samsite.common.db import get_by_public_id, require_user


def legacy_session_get_for_user(*, user: AbstractBaseUser, session_id: object) -> LegacySession:
    require_user(user, "image")
    return get_by_public_id(LegacySession.objects.filter(owner=user), session_id, "image")
