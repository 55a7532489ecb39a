"""The ack plan: one ``multiple`` ack for a finished run from the oldest delivery, single
acks for the rest, never naming a tag twice."""

from __future__ import annotations

from pipeline.sources.amqp.acks import AckPlan


def _plan(*delivered: int) -> AckPlan:
    plan = AckPlan()
    for tag in delivered:
        plan.delivered(tag)
    return plan


def test_a_finished_prefix_is_one_multiple_ack() -> None:
    plan = _plan(1, 2, 3, 4)
    assert plan.plan([2, 1, 3]) == (3, [])
    assert plan.plan([4]) == (4, [])


def test_out_of_order_deliveries_are_acked_singly_and_never_named_again() -> None:
    plan = _plan(1, 2, 3, 4, 5)
    assert plan.plan([2, 4]) == (None, [2, 4])  # 1 is still on the wire
    # 1 finishes: the prefix 1..2 is done, 2 was acked already, so the multiple ack names 1;
    # 3 is still out, so 4 stays acked singly.
    assert plan.plan([1]) == (1, [])
    assert plan.plan([3]) == (3, [])  # 4 was acked already and is not named again
    assert plan.plan([5]) == (5, [])


def test_a_prefix_that_ends_in_single_acks_names_the_last_unacked_tag() -> None:
    plan = _plan(1, 2, 3)
    assert plan.plan([3]) == (None, [3])
    assert plan.plan([1, 2]) == (2, [])
