"""What the hub counts, as an interface: the application passes its Prometheus
metrics in (``server.metrics.Metrics`` fits it), so ``realtime`` stays a library that
imports nothing above it. A test may pass anything with these members."""

from __future__ import annotations

from typing import Protocol


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Gauge(Protocol):
    def inc(self, amount: float = 1) -> None: ...

    def dec(self, amount: float = 1) -> None: ...

    def set(self, value: float) -> None: ...


class Histogram(Protocol):
    def observe(self, amount: float) -> None: ...


class HubMetrics(Protocol):
    # Read-only members, so that any object whose attributes fit will do.
    @property
    def ws_connections(self) -> Gauge: ...

    @property
    def rooms(self) -> Gauge: ...

    @property
    def fanout_latency(self) -> Histogram: ...

    @property
    def frames_out(self) -> Counter: ...

    @property
    def bus_reconnects(self) -> Counter: ...

    @property
    def bus_degraded(self) -> Gauge: ...
