"""Prometheus metrics of one app instance (its own registry: no process-global state).
Labels are route templates and outcome codes, never usernames, content or keys."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The app's metrics, all registered in ``registry`` (what ``/metrics`` exports)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = self._counter(
            "tidings_http_requests_total", "HTTP requests by route and status", "route", "status"
        )
        self.latency = Histogram(
            "tidings_http_request_seconds", "HTTP request latency", ["route"],
            registry=self.registry,
        )
        self.envelopes_queued = self._counter(
            "tidings_envelopes_queued_total", "Envelopes stored for delivery"
        )
        self.envelopes_delivered = self._counter(
            "tidings_envelopes_acknowledged_total", "Envelopes acknowledged by devices"
        )
        self.websockets = Gauge(
            "tidings_websockets_open", "Open device WebSockets on this node", registry=self.registry
        )
        self.errors = self._counter(
            "tidings_errors_total", "Typed errors answered, by code", "code"
        )
        # The periodic clean-up (`tidings.app.purge_round`): what each round removed, and
        # whether each of its tasks ran or failed (a failing task is retried next round).
        self.purged = self._counter(
            "tidings_purged_total",
            "Items removed by the periodic purge, by kind "
            "(envelopes, attachments, evidence, orphan_uploads)",
            "kind",
        )
        self.purge_runs = self._counter(
            "tidings_purge_runs_total",
            "Purge task runs by task (messaging, evidence, orphan_uploads) "
            "and outcome (ok, failed)",
            "task",
            "outcome",
        )

        # Key transparency (`tidings.server.kt_publisher`): the epoch this node's tree is at,
        # each periodic round's outcome, and how long this node's last publication took.
        self.kt_epoch = Gauge(
            "tidings_kt_epoch", "Newest key-transparency epoch this node serves",
            registry=self.registry,
        )
        self.kt_rounds = self._counter(
            "tidings_kt_rounds_total",
            "Key-transparency publication rounds by outcome (published, skipped, failed)",
            "outcome",
        )
        self.kt_publish_seconds = Gauge(
            "tidings_kt_publish_seconds", "Duration of this node's last epoch publication",
            registry=self.registry,
        )

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        """A counter named ``name`` with ``labels``, in this instance's registry."""
        return Counter(name, documentation, list(labels), registry=self.registry)
