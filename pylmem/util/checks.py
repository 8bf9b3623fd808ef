"""Checks of public arguments: one clear message that names the argument."""
from __future__ import annotations

import numbers


def check_level(value, name: str = "level") -> float:
    """A confidence level: a real number strictly between 0 and 1 (0.95, not 95 or "0.95")."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in (0, 1) such as 0.95, got {value!r} "
                         f"({type(value).__name__})")
    v = float(value)
    if not 0 < v < 1:
        hint = f" (a percentage? use {v / 100:g})" if 1 < v < 100 else ""
        raise ValueError(f"{name} must be in (0, 1), got {value!r}{hint}")
    return v


def check_count(value, name: str, minimum: int = 0) -> int:
    """A whole number ≥ ``minimum`` (an int, or a float with an integer value)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value) \
            or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_bool(value, name: str) -> bool:
    """True or False (not a string such as "False")."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_names(value, name: str, allowed, what: str = "name") -> list:
    """A name or a list of names, each one of ``allowed`` (``what``: the kind of name)."""
    allowed = list(allowed)
    if isinstance(value, str):
        value = [value]
    elif not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a name or a list of names (of: "
                         f"{', '.join(map(str, allowed))}), got {value!r}")
    bad = [v for v in value if v not in allowed]
    if bad:
        raise ValueError(f"{name}: unknown {what}(s) {', '.join(map(repr, bad))}; the {what}s "
                         f"are: {', '.join(map(str, allowed))}")
    return list(value)
