"""A circuit breaker per origin: stop calling a host that keeps failing, then probe it once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx
from loguru import logger

from services.errors import CircuitOpenError
from services.state import Peers
from services.state.local import NoPeers

BreakerState = Literal["closed", "open", "half_open"]
Verdict = Literal["success", "failure", "neutral"]

# Only origins that are failing are remembered; this bounds them when a bot calls many hosts.
MAX_TRACKED_ORIGINS = 1024


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    state: BreakerState = "closed"
    opened_at: float = 0.0
    probing: bool = False


class CircuitBreakers:
    """Per-origin breakers: open after `threshold` failures in a row, half-open after `cooldown`."""

    def __init__(
        self,
        threshold: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
        peers: Peers | None = None,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._peers: Peers = peers if peers is not None else NoPeers()
        self._circuits: dict[str, _Circuit] = {}
        self._lock = threading.Lock()

    def check(self, origin: str, request: httpx.Request | None = None) -> bool:
        """Admit one attempt: True when it is the half-open probe; raises while the circuit is open."""
        if self.threshold <= 0 or origin not in self._circuits:
            return False
        with self._lock:
            circuit = self._circuits.get(origin)
            if circuit is None or circuit.state == "closed":
                return False
            if circuit.state == "open":
                wait = circuit.opened_at + self.cooldown - self._clock()
                if wait > 0:
                    raise CircuitOpenError(
                        f"circuit open for {origin} after repeated failures",
                        request=request,
                        retry_after=wait,
                    )
                circuit.state = "half_open"
            if circuit.probing:
                raise CircuitOpenError(
                    f"circuit half-open for {origin}; a probe is in flight",
                    request=request,
                    retry_after=None,
                )
            circuit.probing = True
            return True

    def record(self, origin: str, verdict: Verdict, probe: bool) -> None:
        """Record how an admitted attempt ended."""
        if self.threshold <= 0 or (verdict == "success" and not probe and origin not in self._circuits):
            return
        opened = closed = False
        with self._lock:
            circuit = self._circuits.get(origin)
            if verdict == "success":
                # A success from an attempt admitted before the circuit opened says little; the probe decides.
                if circuit is not None and (probe or circuit.state == "closed"):
                    del self._circuits[origin]
                    if probe:
                        logger.info("circuit for {} closed: the probe succeeded", origin)
                        closed = True
            elif verdict == "failure":
                if circuit is None:
                    circuit = self._track(origin)
                if probe:
                    circuit.state, circuit.opened_at, circuit.probing = "open", self._clock(), False
                    logger.warning("circuit for {} reopened: the probe failed", origin)
                    opened = True
                elif circuit.state == "closed":
                    circuit.failures += 1
                    if circuit.failures >= self.threshold:
                        circuit.state, circuit.opened_at = "open", self._clock()
                        logger.warning(
                            "circuit for {} opened after {} failures in a row", origin, circuit.failures
                        )
                        opened = True
            elif probe and circuit is not None:
                circuit.probing = False  # the probe ended without a verdict; let the next caller probe
        if opened:
            self._peers.circuit_opened(origin, self.cooldown)
        elif closed:
            self._peers.circuit_closed(origin)

    def mirror(self, origin: str, wait: float) -> None:
        """Follow another process's circuit for `origin`: open for `wait` seconds, or closed when 0."""
        if self.threshold <= 0:
            return
        if wait <= 0:
            with self._lock:
                circuit = self._circuits.pop(origin, None)
            if circuit is not None and circuit.state != "closed":
                logger.info("circuit for {} closed: another process's probe succeeded", origin)
            return
        with self._lock:
            circuit = self._circuits.get(origin) or self._track(origin)
            opened_at = self._clock() + min(wait, self.cooldown) - self.cooldown
            if circuit.state != "open" or opened_at > circuit.opened_at:
                circuit.opened_at = opened_at
            circuit.state, circuit.probing = "open", False
        logger.warning("circuit for {} opened: another process saw it fail", origin)

    def _track(self, origin: str) -> _Circuit:
        if len(self._circuits) >= MAX_TRACKED_ORIGINS:
            oldest = next((o for o, c in self._circuits.items() if c.state == "closed"), None)
            del self._circuits[oldest if oldest is not None else next(iter(self._circuits))]
        circuit = self._circuits[origin] = _Circuit()
        return circuit

    def state(self, origin: str) -> BreakerState:
        """The state of one origin's circuit (open turns half-open once the cooldown has passed)."""
        with self._lock:
            circuit = self._circuits.get(origin)
            return "closed" if circuit is None else self._visible_state(circuit)

    def states(self) -> dict[str, BreakerState]:
        """The state of every origin with recent failures; any other origin is closed."""
        with self._lock:
            return {origin: self._visible_state(c) for origin, c in self._circuits.items()}

    def _visible_state(self, circuit: _Circuit) -> BreakerState:
        if circuit.state == "open" and self._clock() >= circuit.opened_at + self.cooldown:
            return "half_open"
        return circuit.state
