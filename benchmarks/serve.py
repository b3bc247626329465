"""``auditor-rt serve`` under load: requests per second and latency at 1, 8 and 32 concurrent clients next to the
model's own batched throughput, then an open-loop overload at 4x what the server sustained, in one run.

The load generator is an asyncio HTTP/1.1 client written here (keep-alive connections, raw sockets), so the
numbers measure the server and not a client library. Every run is bounded in time.

    python benchmarks/serve.py --artifact engines/demo [--seconds 15] [--overload-seconds 60]

Prints, per concurrency: requests/s, p50 and p99 latency, and the ratio of images/s to the model's own throughput
(``Auditor.run_batch`` at the server's max batch, images already decoded, in this process before the server
starts). For the overload: offered and served rates, every status seen, p99 of the accepted requests against the
unloaded p99 (1 client), and the server's RSS growth.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from auditor_rt.runtime import Auditor


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", required=True, type=Path)
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--overload", type=float, default=4.0, help="offered load, times the sustained rate")
    parser.add_argument("--overload-seconds", type=float, default=60.0)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=None,
                        help="the server's --max-wait-ms in the throughput-first overload run (default: the p99 "
                             "measured at the most clients); the latency-first run uses the 1-client p99")
    parser.add_argument("--image-size", type=int, default=640, help="side of the JPEG sent (it is resized)")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Connection:
    """One keep-alive HTTP/1.1 connection: POST a body, read the status and the whole response."""

    def __init__(self, port: int, request: bytes):
        self.port, self.request = port, request
        self.reader = self.writer = None

    async def post(self) -> int:
        """Send the request; a kept-alive connection that the server closed while idle (its keep-alive timeout)
        is reopened once, as HTTP client libraries do."""
        reused = self.writer is not None
        if not reused:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            self.writer.write(self.request)
            await self.writer.drain()
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("closed")
        except (ConnectionError, OSError):
            await self.close()
            if not reused:
                raise
            return await self.post()
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        await self.reader.readexactly(length)
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


def http_request(port: int, body: bytes) -> bytes:
    return (f"POST /v1/audit?heatmap=png HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def closed_loop(port: int, request: bytes, clients: int, seconds: float) -> dict:
    """``clients`` connections, each sending its next request when the previous one is answered."""
    latencies, statuses = [], {}
    stop = time.perf_counter() + seconds

    async def client():
        connection = Connection(port, request)
        while time.perf_counter() < stop:
            began = time.perf_counter()
            status = await connection.post()
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(time.perf_counter() - began)
        await connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return summary(latencies, statuses, time.perf_counter() - began)


async def open_loop(port: int, request: bytes, rate: float, seconds: float) -> dict:
    """Requests arrive at ``rate`` per second whatever the answers (as real overload does), each on a pooled
    connection of its own."""
    latencies, statuses, pool, tasks = [], {}, [], []

    async def one():
        connection = pool.pop() if pool else Connection(port, request)
        began = time.perf_counter()
        try:
            status = await connection.post()
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            kind = f"connection error ({type(exc).__name__})"
            statuses[kind] = statuses.get(kind, 0) + 1
            await connection.close()
            return
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            latencies.append(time.perf_counter() - began)
        pool.append(connection)

    began = time.perf_counter()
    sent = 0
    while (now := time.perf_counter()) - began < seconds:
        due = int((now - began) * rate) + 1
        while sent < due:
            tasks.append(asyncio.ensure_future(one()))
            sent += 1
        await asyncio.sleep(max(0.0, began + sent / rate - time.perf_counter()))
    await asyncio.gather(*tasks)
    for connection in pool:
        await connection.close()
    result = summary(latencies, statuses, time.perf_counter() - began)
    result["offered_per_s"] = sent / seconds
    return result


def summary(latencies: list[float], statuses: dict, seconds: float) -> dict:
    ordered = sorted(latencies)
    pick = (lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000) if ordered else (lambda q: 0.0)
    return {"ok_per_s": len(latencies) / seconds, "p50_ms": pick(0.50), "p99_ms": pick(0.99), "statuses": statuses,
            "requests": sum(statuses.values())}


def model_throughput(artifact: Path, batch: int, image: np.ndarray, seconds: float = 10.0) -> float:
    """Images per second of the model alone at ``batch``, inputs already decoded and resized."""
    with Auditor.load(artifact, batch_size=batch) as auditor:
        resized = cv2.resize(image, auditor.input_size[::-1], interpolation=cv2.INTER_AREA)
        stack = np.stack([resized] * batch)
        auditor.run_batch(stack)
        runs, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            auditor.run_batch(stack)
            runs += 1
        return runs * batch / (time.perf_counter() - began)


def start_server(artifact: Path, port: int, args, max_wait_ms: float | None) -> subprocess.Popen:
    command = [sys.executable, "-c", "from auditor_rt.cli.main import cli; cli()", "serve", str(artifact),
               "--port", str(port), "--max-batch", str(args.max_batch), "--max-queue", str(args.max_queue)]
    if max_wait_ms:
        command += ["--max-wait-ms", f"{max_wait_ms:.0f}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                if b" 200 " in sock.recv(200):
                    return process
        except OSError:
            pass
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.stderr.read()}")
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not become ready")


def stop_server(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def overload(args, body: bytes, rate: float, max_wait: float) -> dict:
    """A fresh server at ``--max-wait-ms max_wait``: 10 s of the overload to warm it up, then the measured run."""
    port = free_port()
    server = start_server(args.artifact, port, args, max_wait)
    try:
        started = rss_mb(server.pid)
        warm = asyncio.run(open_loop(port, http_request(port, body), rate, 10.0))
        before = rss_mb(server.pid)
        result = asyncio.run(open_loop(port, http_request(port, body), rate, args.overload_seconds))
        after = rss_mb(server.pid)
    finally:
        code = stop_server(server)
    result.update(rss_started_mb=started, rss_before_mb=before, rss_after_mb=after, max_wait_ms=max_wait,
                  exit_code=code, warm_up_statuses=warm["statuses"])
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (args.image_size // 16, args.image_size // 16, 3), dtype=np.uint8)
    image = cv2.resize(coarse, (args.image_size, args.image_size), interpolation=cv2.INTER_CUBIC)
    body = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    model = model_throughput(args.artifact, args.max_batch, image)
    print(f"model alone: {model:.1f} images/s at batch {args.max_batch} (decoded, resized, in memory); "
          f"{os.cpu_count()} CPU cores; a {args.image_size}x{args.image_size} JPEG of {len(body) / 1024:.0f} kB "
          "per request, heatmap as PNG")
    report = {"model_images_per_s": model, "levels": {}}

    port = free_port()
    server = start_server(args.artifact, port, args, None)
    request = http_request(port, body)
    print(f"\n{'clients':>7s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'vs model':>8s}  statuses")
    try:
        for clients in args.concurrency:
            result = asyncio.run(closed_loop(port, request, clients, args.seconds))
            report["levels"][clients] = result
            print(f"{clients:7d} {result['ok_per_s']:8.1f} {result['p50_ms']:8.1f} {result['p99_ms']:8.1f} "
                  f"{result['ok_per_s'] / model:8.2f}  {result['statuses']}")
    finally:
        stop_server(server)

    unloaded_p99 = report["levels"][min(args.concurrency)]["p99_ms"]
    saturated = report["levels"][max(args.concurrency)]
    rate = args.overload * saturated["ok_per_s"]
    policies = {"throughput-first": args.max_wait_ms or saturated["p99_ms"], "latency-first": unloaded_p99}
    for policy, max_wait in policies.items():
        result = overload(args, body, rate, max_wait)
        report[f"overload {policy}"] = result
        unexpected = sum(v for k, v in result["statuses"].items() if k not in (200, 503))
        print(f"\noverload, {policy}: {result['offered_per_s']:.1f} req/s offered ({args.overload:g}x the "
              f"{saturated['ok_per_s']:.1f} sustained at {max(args.concurrency)} clients) for "
              f"{args.overload_seconds:g} s, server --max-wait-ms {max_wait:.0f}")
        print(f"  served {result['ok_per_s']:.1f} req/s; statuses {result['statuses']}; other than 200/503: "
              f"{unexpected}")
        print(f"  p99 of accepted requests {result['p99_ms']:.0f} ms = {result['p99_ms'] / unloaded_p99:.2f}x the "
              f"unloaded (1 client) p99 of {unloaded_p99:.0f} ms, {result['p99_ms'] / saturated['p99_ms']:.2f}x the "
              f"p99 at {max(args.concurrency)} clients ({saturated['p99_ms']:.0f} ms)")
        print(f"  server RSS {result['rss_before_mb']:.0f} -> {result['rss_after_mb']:.0f} MB over the "
              f"{args.overload_seconds:g} s ({result['rss_after_mb'] - result['rss_before_mb']:+.0f} MB), after 10 s "
              f"of the same overload first (fresh server: {result['rss_started_mb']:.0f} MB); exit code after SIGTERM "
              f"{result['exit_code']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
