"""End-to-end frames per second of ``infer`` on a video, next to the model's own throughput, in one run.

A video is generated (640x480, 30 fps, ``--seconds`` long, moving shapes so that JPEG/MJPEG decoding does real
work), then three contenders run on it with the same artifact and batch size:
- **model only**: the audit graph on the same frames, already decoded and in memory, in the same batches
  (``Auditor.predict``): the ceiling;
- **infer pipeline**: ``run_pipeline`` on a ``VideoSource`` (reader thread, batching + inference, writer thread), as ``auditor-rt infer``
  runs a video, with JSONL records and no overlays;
- **naive loop**: one thread that decodes a batch, scores it, writes its records, then decodes the next.

    python benchmarks/stream.py --artifact engines/demo [--seconds 30] [--batch 8]

The artifact can be any exported one, e.g. ``engines/demo`` from ``auditor-rt demo``. Medians of ``--repeats``
runs are printed, with the ratio to the model-only throughput (target for the pipeline: >= 0.9 on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from auditor_rt.runtime import Auditor
from auditor_rt.runtime.pipeline import run_pipeline
from auditor_rt.runtime.record_writer import SaveRule
from auditor_rt.runtime.video_source import VideoSource


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", required=True, type=Path, help="an exported artifact folder")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the generated video")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (default: ORT's)")
    return parser.parse_args(argv)


def generate_video(path: Path, seconds: float, size=(640, 480), fps: int = 30) -> int:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    frames = int(seconds * fps)
    for i in range(frames):
        image = background.copy()
        x, y = (37 * i) % (size[0] - 80), (23 * i) % (size[1] - 80)
        cv2.rectangle(image, (x, y), (x + 80, y + 80), (255, 64, 0), -1)
        cv2.circle(image, (size[0] - x - 40, y + 40), 30, (0, 200, 255), -1)
        writer.write(image)
    writer.release()
    return frames


def decode_all(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def model_only(auditor: Auditor, frames: list[np.ndarray], batch: int) -> float:
    start = time.perf_counter()
    for offset in range(0, len(frames), batch):
        auditor.predict(frames[offset:offset + batch])
    return len(frames) / (time.perf_counter() - start)


def naive_loop(auditor: Auditor, path: Path, batch: int, out: Path) -> float:
    capture = cv2.VideoCapture(str(path))
    count = 0
    start = time.perf_counter()
    with open(out, "w") as handle:
        while True:
            chunk = []
            while len(chunk) < batch:
                ok, frame = capture.read()
                if not ok:
                    break
                chunk.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if not chunk:
                break
            for result in auditor.predict(chunk):
                handle.write(json.dumps(result.to_record()) + "\n")
            count += len(chunk)
    capture.release()
    return count / (time.perf_counter() - start)


def pipeline(auditor: Auditor, path: Path, folder: Path) -> tuple[float, int]:
    summary = run_pipeline(auditor, VideoSource([str(path)]), folder, SaveRule(overlays=False))
    return summary.fps, summary.ok


def print_ratios(results: dict[str, list[float]], ceiling_name: str, unit: str) -> None:
    """Median, min and max of each contender, and its median over the ceiling's."""
    ceiling = statistics.median(results[ceiling_name])
    print(f"\n{'contender':32s} {'median ' + unit:>12s} {'min':>7s} {'max':>7s}  vs model")
    for name, values in results.items():
        print(f"{name:32s} {statistics.median(values):12.1f} {min(values):7.1f} {max(values):7.1f}  "
              f"{statistics.median(values) / ceiling:6.2f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if not (args.artifact / "manifest.json").is_file():
        print(f"error: {args.artifact} is not an artifact folder (run `auditor-rt demo` for engines/demo)",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        video = temp / "clip.avi"
        frames = generate_video(video, args.seconds)
        decoded = decode_all(video)
        print(f"video: {frames} frames of 640x480 MJPEG at 30 fps ({args.seconds:.0f} s); batch {args.batch}; "
              f"artifact {args.artifact}")
        results: dict[str, list[float]] = {"model only (frames in memory)": [], "infer pipeline": [],
                                           "naive one-thread loop": []}
        with Auditor.load(args.artifact, batch_size=args.batch, threads=args.threads) as auditor:
            auditor.predict(decoded[:args.batch])  # warm-up
            for round_ in range(args.repeats):
                results["model only (frames in memory)"].append(model_only(auditor, decoded, args.batch))
                fps, scored = pipeline(auditor, video, temp / f"run{round_}")
                if scored != frames:
                    print(f"error: the pipeline scored {scored} of {frames} frames", file=sys.stderr)
                    return 1
                results["infer pipeline"].append(fps)
                results["naive one-thread loop"].append(naive_loop(auditor, video, args.batch, temp / "naive.jsonl"))
    print_ratios(results, "model only (frames in memory)", "fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
