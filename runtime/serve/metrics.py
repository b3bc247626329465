"""What ``GET /metrics`` shows, in Prometheus' text format, through ``prometheus_client`` (the ``serve`` extra): a
registry per app, so that two apps in one process keep their own counts. The gauges are plain attributes that the
event loop and the model thread set, read when the scraper asks."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CONTENT_TYPE = "text/plain; version=0.0.4"

disable_created_metrics()  # no *_created series: a scraper has the process start time already


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.queue_depth = 0   # requests waiting for the model
        self.in_flight = 0     # audit requests being handled
        self.model_images = 0  # images in the model call under way
        registry = {"registry": self.registry}
        self.requests = Counter("auditor_requests", "HTTP requests by path and status.", ("path", "status"), **registry)
        self.rejections = Counter("auditor_rejections", "Requests refused before the model, by reason.", ("reason",),
                                  **registry)
        self.latency = Histogram("auditor_request_seconds", "End-to-end latency of audit requests that reached "
                                 "the model.", buckets=LATENCY_BUCKETS, **registry)
        self.model_latency = Histogram("auditor_model_seconds", "Latency of one model call.", buckets=LATENCY_BUCKETS,
                                       **registry)
        self.batch_size = Histogram("auditor_batch_size", "Images per model call.", buckets=BATCH_BUCKETS, **registry)
        for name, what in (("queue_depth", "Requests waiting for the model."),
                           ("in_flight", "Audit requests being handled."),
                           ("model_images", "Images in the model call under way.")):
            Gauge(f"auditor_{name}", what, **registry).set_function(lambda name=name: getattr(self, name))

    def request(self, path: str, status: int) -> None:
        self.requests.labels(path, str(status)).inc()

    def observe_latency(self, seconds: float) -> None:
        self.latency.observe(seconds)

    def reject(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.model_latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
