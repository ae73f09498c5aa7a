"""The SAM Bulk Dataset Generator project: settings, URLs, ASGI app and the Celery app."""

from samsite.celery import app as celery_app

__all__ = ["celery_app"]
