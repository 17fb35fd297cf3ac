"""Reading CreateScene init values (the plain dicts of convert.init_from_proto or an in-process caller)
and CreateScene options: every reader names the field it rejects ("gaussians.opacity",
"options.tile_size") in an InvalidArgument. A proto3 zero means "the default" throughout."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from services.common.errors import InvalidArgument


def check_keys(values: Mapping[str, Any], known, prefix: str) -> None:
    """InvalidArgument for a key of `values` not in `known`, named prefix.key."""
    for key in values:
        if key not in known:
            raise InvalidArgument(f"{prefix}.{key}", f"unknown field; known: {sorted(known)}")


def integer(values: Mapping[str, Any], key: str, field: str, default: int, *, low: int | None = None,
            high: int | None = None) -> int:
    """values[key] as an int (missing, None or 0 = default), low <= value <= high."""
    raw = values.get(key)
    if raw is None or (not isinstance(raw, bool) and raw == 0):
        return default
    try:
        value = float(raw)
        if not value.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidArgument(field, f"must be an integer, got {raw!r}") from None
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidArgument(field, f"must be in [{low}, {high}], got {value}")
    return value


def number(values: Mapping[str, Any], key: str, field: str, default: float, *, low: float | None = None,
           high: float | None = None, open_low: bool = False, open_high: bool = False) -> float:
    """values[key] as a finite float (missing, None or 0 = default) in the given (half-)open range."""
    raw = values.get(key)
    if raw is None or (not isinstance(raw, bool) and raw == 0):
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InvalidArgument(field, f"must be a number, got {raw!r}") from None
    too_low = low is not None and (value <= low if open_low else value < low)
    too_high = high is not None and (value >= high if open_high else value > high)
    if not math.isfinite(value) or too_low or too_high:
        lo = "(" if open_low else "["
        hi = ")" if open_high else "]"
        raise InvalidArgument(field, f"must be finite and in {lo}{low}, {high}{hi}, got {value}")
    return value


def array(values: Mapping[str, Any], key: str, field: str, *, columns: int, rows: int | None = None,
          dtype=np.float32) -> np.ndarray | None:
    """values[key] as a finite (N, columns) array (N = rows when given, else >= 1); None when absent."""
    raw = values.get(key)
    if raw is None:
        return None
    try:
        a = np.asarray(raw, dtype=dtype)
    except (TypeError, ValueError):
        raise InvalidArgument(field, "is not a numeric array") from None
    want = f"({rows if rows is not None else 'N'}, {columns})"
    if a.ndim != 2 or a.shape[1] != columns or len(a) == 0 or (rows is not None and len(a) != rows):
        raise InvalidArgument(f"{field}.shape", f"expected {want}, got {list(a.shape)}")
    if not np.isfinite(a).all():
        raise InvalidArgument(field, "contains NaN or infinite values")
    return a


def choice(options: Mapping[str, str], key: str, allowed: tuple[str, ...], default: str) -> str:
    """A string option (CreateScene options are strings) that must be one of `allowed`."""
    value = options.get(key, default)
    if value not in allowed:
        raise InvalidArgument(f"options.{key}", f"must be one of {list(allowed)}, got {value!r}")
    return value


def flag(options: Mapping[str, str], key: str) -> bool:
    """A boolean option: true / false (also 1 / 0, yes / no, any case); missing = false."""
    value = str(options.get(key, "false")).lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise InvalidArgument(f"options.{key}", f"must be true or false, got {options[key]!r}")
    return value in ("true", "1", "yes")


def option_number(options: Mapping[str, str], key: str, default: float, *, integer_only: bool = False,
                  low: float | None = None) -> float:
    """A numeric option given as a string; InvalidArgument("options.<key>") when it does not parse or is
    below `low`."""
    raw = options.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
        if integer_only and not value.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidArgument(f"options.{key}", f"must be {'an integer' if integer_only else 'a number'}, "
                                                f"got {raw!r}") from None
    if not math.isfinite(value) or (low is not None and value < low):
        raise InvalidArgument(f"options.{key}", f"must be finite and >= {low}, got {value}")
    return int(value) if integer_only else value
