"""Helpers the step modules of ``frontend.views`` share."""

from __future__ import annotations

from django import forms


def form_error_text(form: forms.Form) -> str:
    """The form's errors on one line, for a page message: ``field: message; other: message``."""
    return "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())
