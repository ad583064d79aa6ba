"""Option checks shared by the models and the workflows: one wording for
every bad value ("<name> should be ..., got ...")."""

import numbers

import numpy as np


def check_integer(name, value, low=0):
    """``value`` as an int, or a ValueError naming ``name``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < low
    ):
        raise ValueError(f"{name} should be an integer >= {low}, got {value!r}")
    return int(value)


def check_number(name, value, low=0.0, high=None):
    """``value`` as a finite float in ``[low, high]``, or a ValueError."""
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and np.isfinite(value)
        and value >= low
        and (high is None or value <= high)
    )
    if not ok:
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} should be a finite number {bound}, got {value!r}")
    return float(value)
