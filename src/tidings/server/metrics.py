"""Prometheus metrics of one app instance (its own registry: no process-global state).
Labels are route templates and outcome codes, never usernames, content or keys."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tidings_http_requests_total",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tidings_http_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=self.registry,
        )
        self.envelopes_queued = Counter(
            "tidings_envelopes_queued_total",
            "Envelopes stored for delivery",
            registry=self.registry,
        )
        self.envelopes_delivered = Counter(
            "tidings_envelopes_acknowledged_total",
            "Envelopes acknowledged by devices",
            registry=self.registry,
        )
        self.websockets = Gauge(
            "tidings_websockets_open", "Open device WebSockets on this node", registry=self.registry
        )
        self.errors = Counter(
            "tidings_errors_total",
            "Typed errors answered, by code",
            ["code"],
            registry=self.registry,
        )
        # The periodic clean-up (`tidings.app.purge_round`): what each round removed, and
        # whether each of its tasks ran or failed (a failing task is retried next round).
        self.purged = Counter(
            "tidings_purged_total",
            "Items removed by the periodic purge, by kind "
            "(envelopes, attachments, evidence, orphan_uploads)",
            ["kind"],
            registry=self.registry,
        )
        self.purge_runs = Counter(
            "tidings_purge_runs_total",
            "Purge task runs by task (messaging, evidence, orphan_uploads) "
            "and outcome (ok, failed)",
            ["task", "outcome"],
            registry=self.registry,
        )
