"""env_float: the typed reader of the QUALITY_* thresholds fails loudly on bad values."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from samsite.env import env_float


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 0.9), ("", 0.9), (" 0.5 ", 0.5), ("1", 1.0), ("0", 0.0)]
)
def test_values_and_defaults(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv("QUALITY_TEST", raising=False)
    else:
        monkeypatch.setenv("QUALITY_TEST", raw)
    assert env_float("QUALITY_TEST", 0.9, minimum=0.0, maximum=1.0) == expected


@pytest.mark.parametrize(
    ("raw", "message"), [("high", "a number"), ("nan", "a number"), ("1.5", "<= 1.0"), ("-1", ">= 0.0")]
)
def test_bad_values_name_the_variable(monkeypatch, raw, message):
    monkeypatch.setenv("QUALITY_TEST", raw)
    with pytest.raises(ImproperlyConfigured, match=f"QUALITY_TEST must be {message}"):
        env_float("QUALITY_TEST", 0.9, minimum=0.0, maximum=1.0)
