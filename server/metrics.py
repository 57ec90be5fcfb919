"""Prometheus metrics, one registry per app so that tests can build many apps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "parley_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.http_latency = Histogram(
            "parley_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.ws_connections = Gauge(
            "parley_ws_connections", "Open WebSocket connections", registry=r
        )
        self.rooms = Gauge("parley_rooms", "Rooms with local members on this node", registry=r)
        self.bus_reconnects = Counter(
            "parley_bus_reconnects", "Bus connections to Redis lost and made again", registry=r
        )
        self.bus_degraded = Gauge(
            "parley_bus_degraded", "1 while this node's bus delivery is degraded", registry=r
        )
        self.frames_in = Counter("parley_frames_in", "Client frames received", ["type"], registry=r)
        self.frames_out = Counter("parley_frames_out", "Frames sent to clients", registry=r)
        self.messages_stored = Counter(
            "parley_messages_stored", "Messages stored", ["role"], registry=r
        )
        # Group commit (issue 19): messages per unit of work that stored a room's messages.
        self.message_batch_size = Histogram(
            "parley_message_commit_batch_size",
            "Members' messages stored per commit (one room)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.fanout_latency = Histogram(
            "parley_fanout_seconds",
            "From publish to local delivery queue",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.slow_clients_dropped = Counter(
            "parley_slow_clients_dropped",
            "Connections closed because their queue filled",
            registry=r,
        )
        self.handshake_refused = Counter(
            "parley_ws_handshake_refused", "Refused WebSocket handshakes", ["reason"], registry=r
        )
        self.ttft = Histogram(
            "parley_llm_time_to_first_token_seconds",
            "Time to first token",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "parley_llm_tokens_per_second",
            "Completion tokens per second",
            ["model"],
            buckets=(5, 10, 20, 40, 80, 160, 320, 640, 1280),
            registry=r,
        )
        self.upstream_errors = Counter(
            "parley_upstream_errors", "Upstream failures", ["upstream", "code"], registry=r
        )
        self.breaker_state = Gauge(
            "parley_breaker_open", "1 when the upstream's circuit is open", ["upstream"], registry=r
        )
        self.generations = Counter(
            "parley_generations", "Generations by outcome", ["outcome"], registry=r
        )
        self.answers_without_connection = Counter(
            "parley_answers_without_connection",
            "Answers refused because every upstream connection was busy"
            " (UPSTREAM_MAX_CONNECTIONS): time to add a node",
            registry=r,
        )
        self.streams_taken_over = Counter(
            "parley_streams_taken_over",
            "Streams of a dead node that this node ended and stored",
            registry=r,
        )
        self.context_rereads = Counter(
            "parley_context_rereads",
            "Answers asked again because the history read beside the question's store"
            " (or this node's copy of it) was not the history before the question",
            registry=r,
        )

        self.spend_tokens = Counter(
            "parley_llm_spend_tokens",
            "Tokens sent to and received from models, every request counted",
            ["model", "kind", "direction"],
            registry=r,
        )
        self.spend_usd = Counter(
            "parley_llm_spend_usd",
            "What requests to models cost, by the catalogue's prices",
            ["model"],
            registry=r,
        )
        self.budget_refusals = Counter(
            "parley_budget_refusals",
            "Requests refused before reaching a model: budget spent, or too many answers",
            ["reason"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
