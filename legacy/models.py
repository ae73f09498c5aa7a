"""The deprecated single-image flow of the old tool, persisted and owned like everything else."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from datasets.image_io import safe_suffix
from samsite.common.db import BaseModel


def legacy_upload_to(instance: models.Model, filename: str) -> str:
    # The services name files after the decoded format ("image.png"); any other suffix is dropped, so a
    # client's "x.html" never becomes a stored ".html" that a file view could serve as a page.
    return f"legacy/{uuid.uuid4().hex}{safe_suffix(filename) or '.bin'}"


class LegacySession(BaseModel):
    """One image opened with ``/sam/init``; ``points`` accumulates pixel points across ``/sam/segment`` calls."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="legacy_sessions"
    )
    image = models.FileField(upload_to=legacy_upload_to, max_length=255)
    filename = models.CharField(max_length=255, blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    is_grayscale = models.BooleanField(default=False)
    points = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["owner", "-created"], name="legacy_owner_created")]

    def __str__(self) -> str:
        return f"legacy session {self.id.hex[:8]}"


class Component(BaseModel):
    """A saved mask of a legacy session; ``number`` is the public component id, counting from 1 per image."""

    session = models.ForeignKey(LegacySession, on_delete=models.CASCADE, related_name="components")
    number = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    mask = models.FileField(upload_to=legacy_upload_to, max_length=255)
    bbox = models.JSONField(default=list)
    area = models.PositiveIntegerField(default=0)
    score = models.FloatField(default=0.0)

    class Meta:
        ordering = ["session", "number"]
        constraints = [models.UniqueConstraint(fields=["session", "number"], name="component_unique_number")]

    def __str__(self) -> str:
        return self.name
