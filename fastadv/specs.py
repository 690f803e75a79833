"""Schedule specs as text: ``"name:key=value,key=value"`` (no torch, no registries).

``parse_spec("piecewise:values=1/0.1/0.01,boundaries=0.5/0.75")`` gives
``("piecewise", {"values": (1.0, 0.1, 0.01), "boundaries": (0.5, 0.75)})``. The schedules
(``fastadv.core.schedules``) give the names meaning; the config and the run names only read them.
"""
from __future__ import annotations

from fastadv.config import ConfigError


def parse_value(text: str):
    """'0.1' -> 0.1; '1/0.1/0.01' -> (1.0, 0.1, 0.01) ('/' separates list items); else str."""
    try:
        if "/" in text:
            return tuple(float(x) for x in text.split("/"))
        return float(text)
    except ValueError:
        return text


def parse_spec(spec: str) -> tuple[str, dict]:
    """'name:k=v,k=v' -> (name, {k: v}); values are numbers, '/'-separated tuples or strings."""
    name, _, rest = spec.strip().partition(":")
    params = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"schedule spec {spec!r}: expected key=value, got {item!r}")
        params[key.strip()] = parse_value(value.strip())
    return name.strip(), params
