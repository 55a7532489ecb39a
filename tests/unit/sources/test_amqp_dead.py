"""A RabbitMQ dead-letter copy fits in one frame: whole when it can, else without the original
headers, saying so (no broker needed: the size is the encoded header table's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage

from pipeline.sources.amqp.dead import DEFAULT_FRAME_MAX, dead_letter, frame_max


@dataclass
class _Message:
    body: bytes = b"not json"
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str | None = "application/json"
    message_id: str | None = "m1"


def _copy(headers: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    original = cast(AbstractIncomingMessage, _Message(headers=headers))
    copy, cut = dead_letter(original, "invalid: x", "amqp:q/m1", "q", DEFAULT_FRAME_MAX)
    return dict(copy.headers or {}), cut


def test_a_copy_that_fits_keeps_every_header() -> None:
    headers, cut = _copy({"x-trace": "abc"})
    assert cut is None
    assert headers == {
        "x-trace": "abc",
        "reason": "invalid: x",
        "location": "amqp:q/m1",
        "queue": "q",
    }


def test_a_copy_too_big_for_a_frame_leaves_the_original_headers_out_and_says_so() -> None:
    headers, cut = _copy({"x-big": "h" * (DEFAULT_FRAME_MAX - 600)})
    assert cut is not None
    assert "left out" in cut
    assert "x-big" not in headers
    assert headers["reason"] == "invalid: x"
    assert headers["truncated"] == cut


def test_the_frame_size_is_the_connections_or_the_default() -> None:
    @dataclass
    class Tune:
        frame_max: int

    @dataclass
    class Transport:
        connection_tune: Tune

    assert frame_max(Transport(Tune(4096))) == 4096
    assert frame_max(Transport(Tune(0))) == DEFAULT_FRAME_MAX
    assert frame_max(None) == DEFAULT_FRAME_MAX
