"""Model building blocks shared by every app."""

from __future__ import annotations

import uuid

from django.db import models


class BaseModel(models.Model):
    """A UUID primary key (its 32-char hex form is the public id) and creation/update times."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    @property
    def public_id(self) -> str:
        return self.id.hex


def parse_uuid(value: object) -> uuid.UUID | None:
    """Parse a public id (hex or dashed UUID); None when it is not one, so callers can answer 404."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value).strip())
    except (ValueError, AttributeError, TypeError):
        return None


def get_by_public_id(queryset, object_id: object, what: str):
    """``queryset.get(pk=...)`` for a public id; a malformed or unknown id raises Http404("<what> not found")."""
    from django.http import Http404

    pk = parse_uuid(object_id)
    if pk is None:
        raise Http404(f"{what} not found")
    try:
        return queryset.get(pk=pk)
    except queryset.model.DoesNotExist:
        raise Http404(f"{what} not found") from None


def require_user(user: object, what: str) -> None:
    """Anonymous (or missing) users own nothing: answer 404 before any owner filter is built."""
    from django.http import Http404

    if not getattr(user, "is_authenticated", False):
        raise Http404(f"{what} not found")
