"""Prometheus text exposition for the service: counters, gauges and histograms, kept in plain Python (one lock),
so the runtime needs no client library."""

from __future__ import annotations

import bisect
import threading

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, cumulative = [], 0
        for bound, count in zip(self.buckets, self.counts):
            cumulative += count
            out.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        out += [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.total:.6f}", f"{name}_count {self.count}"]
        return out


class Metrics:
    """What ``GET /metrics`` shows. Updated from the event loop and the model thread, read by the scraper."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}   # (path, status) -> count
        self.rejections: dict[str, int] = {}              # reason -> count
        self.latency = Histogram(LATENCY_BUCKETS)         # accepted audit requests, seconds end to end
        self.model_latency = Histogram(LATENCY_BUCKETS)   # one model call
        self.batch_size = Histogram(BATCH_BUCKETS)        # images per model call
        self.queue_depth = 0
        self.in_flight = 0
        self.model_images = 0  # images in the model call under way

    def request(self, path: str, status: int) -> None:
        with self.lock:
            self.requests[(path, status)] = self.requests.get((path, status), 0) + 1

    def observe_latency(self, seconds: float) -> None:
        with self.lock:
            self.latency.observe(seconds)

    def reject(self, reason: str) -> None:
        with self.lock:
            self.rejections[reason] = self.rejections.get(reason, 0) + 1

    def batch(self, size: int, seconds: float) -> None:
        with self.lock:
            self.batch_size.observe(size)
            self.model_latency.observe(seconds)

    def render(self) -> str:
        with self.lock:
            lines = ["# HELP auditor_requests_total HTTP requests by path and status.",
                     "# TYPE auditor_requests_total counter"]
            lines += [f'auditor_requests_total{{path="{path}",status="{status}"}} {count}'
                      for (path, status), count in sorted(self.requests.items())]
            lines += ["# HELP auditor_rejections_total Requests refused before the model, by reason.",
                      "# TYPE auditor_rejections_total counter"]
            lines += [f'auditor_rejections_total{{reason="{reason}"}} {count}'
                      for reason, count in sorted(self.rejections.items())]
            lines += ["# HELP auditor_request_seconds End-to-end latency of audit requests that reached the model.",
                      "# TYPE auditor_request_seconds histogram", *self.latency.lines("auditor_request_seconds"),
                      "# HELP auditor_model_seconds Latency of one model call.",
                      "# TYPE auditor_model_seconds histogram", *self.model_latency.lines("auditor_model_seconds"),
                      "# HELP auditor_batch_size Images per model call.",
                      "# TYPE auditor_batch_size histogram", *self.batch_size.lines("auditor_batch_size"),
                      "# HELP auditor_queue_depth Requests waiting for the model.",
                      "# TYPE auditor_queue_depth gauge", f"auditor_queue_depth {self.queue_depth}",
                      "# HELP auditor_in_flight Audit requests being handled.",
                      "# TYPE auditor_in_flight gauge", f"auditor_in_flight {self.in_flight}",
                      "# HELP auditor_model_images Images in the model call under way.",
                      "# TYPE auditor_model_images gauge", f"auditor_model_images {self.model_images}"]
        return "\n".join(lines) + "\n"
