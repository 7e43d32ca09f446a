"""Budgets of model requests, exact under concurrency: a request reserves what it may cost before it is sent.

A budget (the project's spending cap, a run's or a campaign's tokens and money) is a sum over ``LlmCall`` rows. Every
attempt that goes to a provider first takes, inside one short transaction, a lock per budget it falls under
(PostgreSQL ``pg_advisory_xact_lock`` keyed on the budget's rows; SQLite, the embedded mode, has one writer, so no
lock is needed), checks spent + reserved + this attempt <= limit, and inserts the attempt's ``LlmCall`` row in the
*reserved* state holding its counted prompt tokens, its maximum output and their maximum cost. The transaction
commits, the request is sent, then the same row is settled with the real usage (or the failure). Two workers can
therefore never both take the last of a budget: the second waits for the first's commit and sees its reservation.

The expiry rule. A reserved row counts at its reserved amounts until its ``reserved_until``: the attempt's timeout
twice over plus ``RESERVATION_SLACK_SECONDS`` (httpx bounds each phase of a request, connect, write and each read,
not the whole attempt). A worker killed mid-request leaves its row reserved; the next reservation under the same
budget settles such an expired row as a failure whose prompt tokens are counted as sent (estimated: the prompt goes
out right after the reservation commits, so a worker killed later had almost surely sent it), its answer and money
as not spent. A worker still alive past its reservation overwrites that with its real usage when it settles.

Cache hits never reserve: they cost nothing and are recorded after the fact.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Sum
from django.utils import timezone

from .methods.base import MethodError
from .models import LlmCall

# Beyond twice the attempt's timeout: the time between the reservation's commit and the first byte sent (building
# the request, DNS, the outbound policy's check) and clock differences between workers, which NTP keeps far below.
RESERVATION_SLACK_SECONDS = 60
# What an expired reservation says once it is settled.
ABANDONED = (
    "no answer was recorded: the worker stopped during the request (its reservation expired); the prompt's "
    "tokens are counted as sent"
)


class BudgetExceeded(MethodError):
    """A budget (the project's spending cap, a run's or a campaign's tokens or money) would be exceeded by the next
    request; it is not made."""


@dataclass(frozen=True)
class Limit:
    """One budget the client checks before each request: the ``LlmCall`` rows matching ``rows`` (cache hits left
    out, live reservations in) plus the next request must stay within ``max_tokens`` and ``max_cost``."""

    name: str  # "run budget", "campaign budget", "spending cap"
    rows: dict[str, Any]
    max_tokens: int | None = None
    max_cost: Decimal | None = None


def reservation_seconds(timeout: float) -> float:
    """How long an attempt's reservation counts (the expiry rule in the module's docstring)."""
    return 2 * float(timeout) + RESERVATION_SLACK_SECONDS


def reserve(
    *,
    limits: Sequence[Limit],
    need_tokens: int,
    need_cost: Decimal | None,
    timeout: float,
    row: dict[str, Any] | None,
) -> int | None:
    """Check every limit with this attempt's ``need`` and, when ``row`` (the ``LlmCall`` fields) is given, insert the
    attempt's reserved row, all under the limits' locks. Returns the row's id; raises ``BudgetExceeded``."""
    if not limits and row is None:
        return None
    with transaction.atomic():
        _lock(sorted({_lock_key(limit.rows) for limit in limits}))
        now = timezone.now()
        for limit in limits:
            _expire(limit.rows, now)
            _check(limit, need_tokens, need_cost)
        if row is None:
            return None
        return LlmCall.objects.create(
            **row,
            ok=False,
            cached=False,
            reserved_until=now + timedelta(seconds=reservation_seconds(timeout)),
        ).pk


def settle(row_id: int, **fields: Any) -> None:
    """The attempt's real outcome on its reserved row; the row stops being a reservation."""
    LlmCall.objects.filter(pk=row_id).update(reserved_until=None, **fields)


def discard(row_id: int) -> None:
    """An attempt that never reached the server (refused or lost connection) and is retried: nothing was spent."""
    LlmCall.objects.filter(pk=row_id, reserved_until__isnull=False).delete()


def spent(rows: dict[str, Any]) -> tuple[int, Decimal]:
    """(tokens, money) of the budget over ``rows``: finished calls at their real amounts, live reservations at their
    reserved ones (expired reservations are settled first, under the lock, by ``reserve``)."""
    total = LlmCall.objects.filter(cached=False, **rows).aggregate(
        tokens=Sum(F("input_tokens") + F("output_tokens")), cost=Sum("cost")
    )
    return int(total["tokens"] or 0), total["cost"] or Decimal(0)


def _check(limit: Limit, need_tokens: int, need_cost: Decimal | None) -> None:
    tokens, cost = spent(limit.rows)
    if limit.max_tokens is not None and tokens + need_tokens > limit.max_tokens:
        raise BudgetExceeded(
            f"{limit.name} of {limit.max_tokens:,} tokens reached ({tokens:,} used or reserved, "
            f"the next request may take {need_tokens:,})"
        )
    if limit.max_cost is None:
        return
    if cost >= limit.max_cost:
        raise BudgetExceeded(f"{limit.name} of {usd(limit.max_cost)} reached ({usd(cost)} spent or reserved)")
    if need_cost is not None and cost + need_cost > limit.max_cost:
        raise BudgetExceeded(
            f"{limit.name} of {usd(limit.max_cost)} reached ({usd(cost)} spent or reserved, the "
            f"next request may cost {usd(need_cost)})"
        )


def _expire(rows: dict[str, Any], now: Any) -> None:
    """Settle the budget's expired reservations: the prompt counted as sent (estimated), no answer, no money."""
    LlmCall.objects.filter(reserved_until__lte=now, **rows).update(
        reserved_until=None, ok=False, output_tokens=0, cost=0, estimated=True, error=ABANDONED
    )


def _lock_key(rows: dict[str, Any]) -> int:
    """A signed 64-bit advisory-lock key per budget: the same rows, the same key, in every worker."""
    material = "culprit:llm-budget:" + json.dumps(rows, sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(material.encode()).digest()[:8], "big", signed=True)


def _lock(keys: list[int]) -> None:
    """Transaction-scoped locks, taken in one order (sorted) so two requests under the same budgets cannot
    deadlock. SQLite serialises writers itself (``transaction_mode = IMMEDIATE``, config/settings.py)."""
    if connection.vendor != "postgresql" or not keys:
        return
    with connection.cursor() as cursor:
        for key in keys:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def usd(value: Decimal | float) -> str:
    return f"${value:,.2f}" if value >= 1 or value == 0 else f"${value:,.4f}"
