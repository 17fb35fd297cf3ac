"""Small parsing helpers shared by the `headforge` subcommands."""

from __future__ import annotations


def pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    """KEY=VALUE flags -> {key: value}; SystemExit naming the flag for a malformed item."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"headforge: {flag} wants KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def amounts(items: list[str] | None, flag: str) -> dict[str, float]:
    """NAME=AMOUNT flags -> {name: amount}."""
    out = {}
    for name, value in pairs(items, flag).items():
        try:
            out[name] = float(value)
        except ValueError:
            raise SystemExit(f"headforge: {flag} wants NAME=NUMBER, got {name}={value}") from None
    return out
