"""Talking to the Celery broker from a web request, when the broker may be down.

A request that saved its rows (an upload's jobs, OTLP spans) must not answer 500 because the message that starts the
work could not be sent: the rows are the truth, and the reaper (or the client's retry) sends it again later.
``send`` says whether the message left; ``ping`` is the health check's view of the broker.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.exceptions import OperationalError

logger = logging.getLogger(__name__)

# What a publish raises when the broker cannot be reached: kombu wraps connection errors in OperationalError, but
# some transports let socket errors through.
BROKER_ERRORS = (OperationalError, ConnectionError, OSError, TimeoutError)
# Seconds a client should wait before retrying a request the broker could not take (OTLP exporters honour it).
RETRY_AFTER = 30


def send(task: Any, *args: Any, countdown: float | None = None) -> bool:
    """``task.delay(*args)`` (in ``countdown`` seconds if given); False (logged) when the broker cannot be reached."""
    try:
        if countdown is None:
            task.delay(*args)
        else:
            task.apply_async(args, countdown=countdown)
    except BROKER_ERRORS as exc:
        logger.warning("broker unavailable, %s%r not sent: %s", task.name, args, type(exc).__name__)
        return False
    return True


def ping(timeout: float = 2.0) -> bool:
    """Whether a connection to the broker can be made now (a Redis PING for Redis, the folders for the filesystem)."""
    from config.celery import app, ensure_broker_folders

    ensure_broker_folders()  # the embedded broker's folders are the broker; made on first use
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
            connection.default_channel  # noqa: B018 - opening the channel is what reaches Redis
    except Exception as exc:  # noqa: BLE001 - any failure means "unavailable" to a health check
        logger.warning("broker health check failed: %s", type(exc).__name__)
        return False
    return True
