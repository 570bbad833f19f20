"""Checks the CLI's options share beyond what click's types do."""

from __future__ import annotations

import math
from typing import Any

import click


def finite(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A float option's callback: NaN and infinity are refused (click's ranges let NaN through, since every
    comparison with it is false)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise click.BadParameter(f"{value!r} is not a finite number", ctx=ctx, param=param)
    return value
