"""Parts of the package that need a client library installed as an extra.

The brokers' and the shared ledger's client libraries are extras (``pip install
'feedback-pipeline[redis]'``, ``[amqp]``, ``[nats]``, ``[sqs]``, ``[postgres]``, or
``[all]``): the module that needs one is imported only when its scheme is used, through
:func:`load`, and a missing library is one line naming the install command (a
:class:`~pipeline.errors.MissingExtraError`, exit 2).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from pipeline.errors import MissingExtraError

#: The top-level module of each client library, and the extra that installs it.
EXTRAS = {
    "redis": "redis",
    "hiredis": "redis",
    "aio_pika": "amqp",
    "aiormq": "amqp",
    "pamqp": "amqp",
    "asyncpg": "postgres",
    "nats": "nats",
    "aiobotocore": "sqs",
    "botocore": "sqs",
}


def load(module: str, *, what: str) -> ModuleType:
    """Import ``module`` (a part of this package); ``what`` names what needs it in the message
    if its client library is not installed."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        raise MissingExtraError(what, extra) from None
