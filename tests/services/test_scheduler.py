"""The pool's slot scheduler, driven directly: bulkheads, fair order, no starvation, shedding."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.transport.scheduler import MAX_IDLE_ORIGINS, GradientLimit, SlotScheduler, Ticket, default_share

HOG = "hog"
OTHERS = ("a", "b", "c")


@dataclass
class Model:
    """What the test remembers beside the scheduler: who holds slots, who waits, and grant history."""

    sched: SlotScheduler[str, int] = field(init=False)
    holding: list[str] = field(default_factory=list)
    waiting: dict[int, Ticket[str, int]] = field(default_factory=dict)
    granted: list[Ticket[str, int]] = field(default_factory=list)
    # For each waiting ticket: older waiters at its arrival, and grants made to others while its own
    # origin had room.
    older_at_arrival: dict[int, int] = field(default_factory=dict)
    passed_over: dict[int, int] = field(default_factory=dict)
    releases: int = 0
    arrived_at: dict[int, int] = field(default_factory=dict)
    served_at: dict[int, int] = field(default_factory=dict)

    def grant(self, ticket: Ticket[str, int]) -> None:
        sched = self.sched
        for other in self.waiting.values():
            if other is ticket:
                continue
            room = sched._origins[other.key].busy - (other.key == ticket.key) < sched.limit_of(other.key)
            if other.seq < ticket.seq:
                # An older waiter may only be passed over when its own origin is at its limit.
                assert other.key != ticket.key, "FIFO within an origin"
                assert not room, "a younger waiter was served before an older one that had room"
            elif room:
                self.passed_over[other.seq] += 1
        del self.waiting[ticket.seq]
        self.granted.append(ticket)
        self.holding.append(ticket.key)
        self.served_at[ticket.seq] = self.releases

    def arrive(self, key: str) -> None:
        if self.sched.try_acquire(key):
            self.holding.append(key)
            return
        seq = self.sched._seq + 1
        self.older_at_arrival[seq] = len(self.waiting)
        self.passed_over[seq] = 0
        self.arrived_at[seq] = self.releases
        ticket = self.sched.enqueue(key, seq)
        assert ticket is not None
        if ticket.state == 0:
            self.waiting[ticket.seq] = ticket

    def release(self, index: int, rtt: float | None = None) -> None:
        key = self.holding.pop(index % len(self.holding))
        self.releases += 1
        self.sched.release(key, rtt)

    def check(self) -> None:
        sched = self.sched
        assert sched.busy == len(self.holding) <= sched.capacity
        assert sched.queued == len(self.waiting)
        for key in {*OTHERS, HOG}:
            assert self.holding.count(key) <= sched.per_origin
        if sched.busy < sched.capacity:
            # Work conserving: with a free slot, every origin that has waiters is at its limit.
            for ticket in self.waiting.values():
                assert sched._origins[ticket.key].busy >= sched.limit_of(ticket.key)
        for seq, count in self.passed_over.items():
            if seq in self.waiting:
                assert count <= self.older_at_arrival[seq], "a waiter was passed over by younger ones"


def make(capacity: int, per_origin: int, *, adaptive: bool = False, max_queued: int = 10_000) -> Model:
    model = Model()
    model.sched = SlotScheduler(capacity, per_origin, max_queued, model.grant, adaptive=adaptive)
    return model


operations = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.sampled_from((HOG, HOG, HOG, *OTHERS))),
        st.tuples(st.just("release"), st.integers(0, 1000)),
        st.tuples(st.just("cancel"), st.integers(0, 1000)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(capacity=st.integers(1, 8), share=st.integers(1, 8), ops=operations)
def test_scheduler_fair_order_and_bulkheads_hold_under_any_schedule(
    capacity: int, share: int, ops: list[tuple[str, object]]
) -> None:
    model = make(capacity, min(share, capacity))
    for op, arg in ops:
        if op == "arrive":
            model.arrive(str(arg))
        elif op == "release" and model.holding:
            model.release(int(str(arg)))
        elif op == "cancel" and model.waiting:
            seqs = sorted(model.waiting)
            ticket = model.waiting.pop(seqs[int(str(arg)) % len(seqs)])
            model.sched.cancel(ticket)
        model.check()
    # No waiter starves: releasing slots one by one serves every waiter, in a bounded number of steps.
    steps = 0
    while model.waiting:
        model.release(0)
        steps += 1
        model.check()
        assert steps <= len(ops) + capacity
    assert model.sched.busy == len(model.holding)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@example(capacity=2, hog_queue=0, arrivals=["a", "a", "a"], hog_between=[0] * 30)  # the hog drains
@given(
    capacity=st.integers(2, 12),
    hog_queue=st.integers(0, 50),
    arrivals=st.lists(st.sampled_from(OTHERS), min_size=1, max_size=30),
    hog_between=st.lists(st.integers(0, 5), min_size=30, max_size=30),
)
def test_scheduler_serves_other_origins_within_bounded_releases_while_one_hogs(
    capacity: int, hog_queue: int, arrivals: list[str], hog_between: list[int]
) -> None:
    # No per-origin cap at all: fair order alone must keep the hog from starving the others.
    model = make(capacity, capacity)
    for _ in range(capacity + hog_queue):
        model.arrive(HOG)
    others: list[int] = []

    def release_hog() -> None:
        if HOG in model.holding:  # the others may have drained the hog's slots between arrivals
            model.release(model.holding.index(HOG))
        while any(key != HOG for key in model.holding):  # the others answer at once
            model.release(next(i for i, key in enumerate(model.holding) if key != HOG))
        model.check()

    for key, hogs in zip(arrivals, hog_between, strict=False):
        for _ in range(hogs):
            model.arrive(HOG)  # the hog keeps asking, ahead of and behind the others
        model.arrive(key)
        if key in model.holding:
            model.release(model.holding.index(key))
        else:
            others.append(max(model.waiting))
        release_hog()
    while any(t.key != HOG for t in model.waiting.values()):
        release_hog()
    for seq in others:
        # Each release serves the oldest waiter: no more releases than waiters ahead of it, plus one.
        assert model.served_at[seq] - model.arrived_at[seq] <= model.older_at_arrival[seq] + 1


def test_scheduler_gives_a_freed_slot_to_the_oldest_waiter_not_the_releasing_origin() -> None:
    model = make(2, 2)
    model.arrive(HOG)
    model.arrive(HOG)
    model.arrive("a")  # queued first
    model.arrive(HOG)  # queued second
    model.release(model.holding.index(HOG))
    assert [t.key for t in model.granted] == ["a"]


def test_scheduler_caps_an_origin_at_its_share_while_others_still_get_slots() -> None:
    model = make(4, 2)
    for _ in range(5):
        model.arrive(HOG)
    assert model.holding.count(HOG) == 2
    model.arrive("a")
    assert model.holding.count("a") == 1
    assert model.sched.queued_for(HOG) == 3


def test_scheduler_sheds_once_the_origin_queue_is_full() -> None:
    model = make(1, 1, max_queued=2)
    model.arrive(HOG)
    assert model.sched.enqueue(HOG, 0) is not None
    assert model.sched.enqueue(HOG, 0) is not None
    assert model.sched.enqueue(HOG, 0) is None
    assert model.sched.snapshot()[HOG].shed == 1


def test_scheduler_sheds_when_the_predicted_wait_passes_the_budget() -> None:
    model = make(4, 4, adaptive=True)
    for _ in range(4):
        model.arrive(HOG)
    for _ in range(4):
        model.release(0, rtt=2.0)
        model.arrive(HOG)
    # At 2 s an exchange and 4 slots, the 3rd waiter would wait about 1.5 s.
    assert model.sched.enqueue(HOG, 0, budget=1.0) is not None
    assert model.sched.enqueue(HOG, 0, budget=1.0) is not None
    assert model.sched.enqueue(HOG, 0, budget=1.0) is None


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(ops=operations, rtts=st.lists(st.floats(0.001, 5.0), min_size=200, max_size=200))
def test_scheduler_adaptive_limits_keep_every_invariant(
    ops: list[tuple[str, object]], rtts: list[float]
) -> None:
    model = make(6, 4, adaptive=True)
    for (op, arg), rtt in zip(ops, rtts, strict=False):
        if op == "arrive":
            model.arrive(str(arg))
        elif op == "release" and model.holding:
            model.release(int(str(arg)), rtt)
        model.check()
        for key, slots in model.sched.snapshot().items():
            assert 1 <= slots.limit <= 4, key
    while model.waiting:
        model.release(0, 0.01)
        model.check()


def test_gradient_limit_shrinks_for_a_slow_origin_and_recovers_when_it_speeds_up() -> None:
    limit = GradientLimit(50, 5, 50)
    for _ in range(200):
        limit.sample(0.035, 50)
    assert limit.limit == 50
    for _ in range(60):
        limit.sample(2.0, 50)
    slow = limit.limit
    assert slow <= 10
    for _ in range(300):
        limit.sample(0.035, limit.limit)
    assert limit.limit == 50 > slow


def test_gradient_limit_keeps_a_quiet_origin_share() -> None:
    limit = GradientLimit(50, 5, 50)
    for _ in range(100):
        limit.sample(0.035, 1)
    for _ in range(100):
        limit.sample(2.0, 1)  # slow but barely used: nothing says it is overloaded
    assert limit.limit == 50


def test_default_share_is_half_the_pool() -> None:
    assert (default_share(100), default_share(1), default_share(3)) == (50, 1, 2)


def test_scheduler_forgets_idle_origins_past_a_bound() -> None:
    model = make(4, 4)
    for i in range(MAX_IDLE_ORIGINS + 50):
        model.arrive(f"host{i}")
        model.release(0, 0.01)
    assert len(model.sched._origins) <= MAX_IDLE_ORIGINS + 1


def slow_down(model: Model, key: str, held: int) -> None:
    """Teach `key`'s limiter that it is slow while `held` of its requests are in flight."""
    for _ in range(held):
        model.arrive(key)
    for _ in range(200):
        fast = model.sched._origins[key].limiter.samples < 20
        model.release(model.holding.index(key), rtt=0.01 if fast else 2.0)
        model.arrive(key)


def test_scheduler_lets_a_lone_origin_use_its_whole_share_whatever_it_learned() -> None:
    model = make(40, 40, adaptive=True)
    slow_down(model, HOG, 40)
    assert model.sched._origins[HOG].limit < 20  # it learned that it is slow...
    assert model.holding.count(HOG) == 40  # ...but nobody else wants a slot: nothing queued
    assert model.sched.queued == 0
    assert model.sched.snapshot()[HOG].limit == 40


def test_scheduler_holds_a_slow_origin_to_its_learned_limit_while_others_use_the_pool() -> None:
    model = make(40, 40, adaptive=True)
    slow_down(model, HOG, 40)
    learned = model.sched._origins[HOG].limit
    model.release(model.holding.index(HOG))
    model.arrive("a")  # another origin takes the freed slot
    assert model.holding.count("a") == 1
    while model.holding.count(HOG) > learned - 1:
        model.release(model.holding.index(HOG))
    model.arrive(HOG)
    model.arrive(HOG)  # the second one is past the learned limit: it waits though slots are free
    assert model.holding.count(HOG) == learned
    assert model.sched.queued_for(HOG) == 1
    assert model.sched.snapshot()[HOG].limit == learned
    model.release(model.holding.index("a"))  # the other origin goes idle: the waiter gets its slot
    assert model.sched.queued_for(HOG) == 0
    assert model.holding.count(HOG) == learned + 1
    model.check()
