"""Ledgers: the durable record of every input record's state."""

from __future__ import annotations

from pipeline.ledger.base import Decision, Ledger
from pipeline.ledger.sqlite import SqliteLedger

__all__ = ["Decision", "Ledger", "SqliteLedger"]
