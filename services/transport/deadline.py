"""The call's deadline as the transport sees it: carried on the request, bounding every wait."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import httpx

from services.errors import deadline_exceeded
from services.resilience.retry import Deadline

# Request extension holding the call's `Deadline`: every wait of the exchange ends by then, so the
# service needs no timer of its own around a request that this transport carries.
DEADLINE = "courier.deadline"
# Timers may fire a hair early; a deadline this close counts as reached.
DEADLINE_SLACK = 0.005

T = TypeVar("T")


def within(limit: float | None, deadline: Deadline | None) -> float | None:
    """`limit` seconds, or fewer when the call's deadline comes first."""
    if deadline is None:
        return limit
    left = deadline.remaining()
    return left if limit is None or left < limit else limit


def raise_if_past_deadline(request: httpx.Request) -> None:
    """Turn a timeout that came from the call's deadline into `DeadlineExceededError`."""
    deadline: Deadline | None = request.extensions.get(DEADLINE)
    if deadline is not None and deadline.remaining() <= DEADLINE_SLACK:
        raise deadline_exceeded(request, deadline.seconds) from None


async def bounded(step: Awaitable[T], request: httpx.Request, deadline: Deadline | None) -> T:
    """Await `step` within `deadline`, for the rare steps that don't run through this transport."""
    if deadline is None:
        return await step
    try:
        async with asyncio.timeout(deadline.remaining()):
            return await step
    except TimeoutError:
        raise deadline_exceeded(request, deadline.seconds) from None
