"""The faults the fake API can be told to inject (``--fail-rate``, ``--reset-rate``, ...):
shares of requests, latencies, and how they are checked and changed while it runs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from pipeline.fake.hostile import Hostile


@dataclass(kw_only=True)
class Faults:
    """Misbehaviour to inject; mutable so a running server picks up changes at once."""

    fail_rate: float = 0.0
    throttle_rps: float | None = None
    latency_ms: float = 0.0
    reset_rate: float = 0.0
    #: A share of POSTs stored and then answered ``slow_ms`` late (later than a client waits).
    slow_rate: float = 0.0
    slow_ms: float = 2000.0
    error_status: int | None = None
    seed: int | None = None
    #: A misbehaviour from pipeline.fake.hostile; a mode name or an object on the wire.
    hostile: Hostile | None = None

    def __post_init__(self) -> None:
        self.hostile = Hostile.parse(self.hostile)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError when a field is out of range or of the wrong type."""
        for name in ("fail_rate", "reset_rate", "slow_rate"):
            value = _number(name, getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("latency_ms", "slow_ms"):
            if _number(name, getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.throttle_rps is not None and _number("throttle_rps", self.throttle_rps) <= 0:
            raise ValueError("throttle_rps must be > 0 or null")
        if self.error_status is not None and (
            not _is_int(self.error_status) or not 400 <= self.error_status <= 599
        ):
            raise ValueError("error_status must be an HTTP error status (400-599) or null")
        if self.seed is not None and not _is_int(self.seed):
            raise ValueError("seed must be an integer or null")

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply several field changes at once; nothing changes if any is invalid."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        candidate = Faults(**{**asdict(self), **changes})
        for name in names:
            setattr(self, name, getattr(candidate, name))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_int(value: object) -> bool:
    # bool is an int subclass, but `true` is never a meaningful status or seed.
    return isinstance(value, int) and not isinstance(value, bool)


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    return float(value)
