"""Prometheus metrics of one app instance (own registry, so tests can build several apps in one process)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "querywise_requests", "Answered requests", ["source", "status", "category"], registry=self.registry
        )
        self.latency = Histogram(
            "querywise_request_seconds",
            "End-to-end latency",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "querywise_batch_size",
            "Prompts decoded together",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
            registry=self.registry,
        )
        self.queue_depth = Gauge("querywise_queue_depth", "Requests waiting for the model", registry=self.registry)
        self.shed = Counter("querywise_shed", "Requests refused because the queue was full", registry=self.registry)
        self.rate_limited = Counter(
            "querywise_rate_limited",
            "Requests refused with 429 by the per-key rate limit",
            ["route"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "querywise_auth_failures", "Requests refused with 401: no key, or a wrong one", registry=self.registry
        )
        self.log_failures = Counter(
            "querywise_querylog_failures",
            "Query-log rows that could not be written when answered (kept in memory and retried)",
            registry=self.registry,
        )
        self.log_pending = Gauge(
            "querywise_querylog_pending",
            "Query-log rows waiting in memory for the log database",
            registry=self.registry,
        )
        self.log_dropped = Gauge(
            "querywise_querylog_dropped", "Query-log rows lost for good (backlog overflow)", registry=self.registry
        )
        self.exec_guided = Counter(
            "querywise_exec_guided",
            "Execution-guided decoding: answers whose greedy SQL failed, by whether a sampled candidate rescued them",
            ["result"],
            registry=self.registry,
        )
