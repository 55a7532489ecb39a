"""What became of a batch's dead-letter copies, said once for every broker that writes them
one by one (RabbitMQ, NATS, SQS): each copy written whole (None), written truncated (what was
left out), or refused (the exception) and its entry left on the broker."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.errors import DeadLetterError

#: A copy's outcome: None written whole; a string, what was left out; an exception, refused.
Copy = BaseException | str | None


def copied(result: Copy) -> bool:
    """Whether the copy was written (whole or truncated): its entry may be acked."""
    return not isinstance(result, BaseException)


def raise_problems(
    located: Sequence[tuple[str, Copy]],
    dead: str,
    failure: Callable[[BaseException], str],
    stays: str,
) -> None:
    """Raise a :class:`DeadLetterError` naming every copy not written whole, if any:
    ``located`` pairs each copy's entry location with its outcome, ``dead`` is where the
    copies go, ``failure`` says a refusal without secrets, ``stays`` where a refused entry is."""
    problems = [
        (
            where,
            f"dead letter to {dead} written truncated: {result}"
            if isinstance(result, str)
            else f"dead letter to {dead} refused ({failure(result)}): {stays}",
        )
        for where, result in located
        if result is not None
    ]
    if problems:
        refused = sum(1 for _, result in located if isinstance(result, BaseException))
        raise DeadLetterError(problems, refused)
