"""What the parts that send need of the run control: a narrow view of it.

The run control (:class:`pipeline.engine.control.RunControl`) belongs to the runner, above the
parts that send (delivery, the shared rate budget). They see only this: whether the run
stopped and why, a wait that ends early when it stops, and a way to stop it with a reason.
"""

from __future__ import annotations

from typing import Protocol


class Stopping(Protocol):
    """A run that may stop: ``abort`` keeps the first reason given; ``pause`` ends early once
    the run stops."""

    @property
    def stopped(self) -> bool: ...

    @property
    def reason(self) -> str | None: ...

    def abort(self, reason: str) -> None: ...

    async def pause(self, seconds: float) -> None: ...
