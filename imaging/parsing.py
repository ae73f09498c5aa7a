"""Reading numbers out of untrusted input (JSON bodies, form fields), shared by points, boxes and edits."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np


def parse_finite_number(value: Any, error: Callable[[str], Exception]) -> float:
    """``value`` as a finite float: ints, floats (numpy's too) and numeric strings (surrounding blanks
    ignored). Booleans, NaN, infinities, other strings and other types raise ``error(message)``, where
    ``message`` reads "must be a number, ..." / "must be a finite number" (the caller names the field)."""
    if isinstance(value, bool | np.bool_):
        raise error("must be a number, not a boolean")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise error(f"must be a number, got {value!r}") from None
    elif isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
    else:
        raise error(f"must be a number, got {type(value).__name__}")
    if not math.isfinite(number):
        raise error("must be a finite number")
    return number
