"""The in-process state: GCRA turns, and the no-op peers and cache tier."""

from __future__ import annotations

from services.state import build_state
from services.state.local import LocalState, LocalTurns
from tests.services.conftest import FAST


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_local_turns_space_requests_after_the_burst_and_refuse_past_the_budget():
    clock = Clock()
    turns = LocalTurns(clock)
    # 2 per second: a burst of two, then one every 0.5 s.
    waits = [turns.take("h", 0.5, 0.5, 0.0, 10.0) for _ in range(4)]
    assert waits == [0.0, 0.0, 0.5, 1.0]
    assert turns.take("h", 0.5, 0.5, 0.0, 1.0) == 1.5  # over the budget: refused, no turn taken
    assert turns.take("h", 0.5, 0.5, 0.0, 10.0) == 1.5
    assert turns.take("other", 0.5, 0.5, 0.0, 10.0) == 0.0
    clock.now += 10
    assert turns.take("h", 0.5, 0.5, 2.0, 10.0) == 2.0  # a learned block's delay comes first


async def test_local_state_is_the_default_and_shares_nothing():
    state = build_state(FAST)
    assert isinstance(state, LocalState) and not state.needs_start
    assert state.cluster() is None
    assert not state.cache_tier.enabled and not state.cache_tier.announced
    assert await state.cache_tier.get("k") is None
