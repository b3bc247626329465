"""What contained decoding costs: images per second decoded in this process against the decoder pool, side by side.

``infer`` and ``serve`` decode in decoder processes (``runtime/decoder_pool.py``) so that a file that crashes or
hangs a codec costs one error, not the run. This measures the price, on a generated folder of JPEGs (smooth random
pictures, quality 90) at each ``--sizes`` entry, with the same number of threads on both sides:
- **in-process threads**: ``decode_image`` on a thread pool, as infer decoded before (OpenCV releases the GIL);
- **decoder pool**: the same threads each hand a chunk of ``--chunk`` files to a decoder process
  (``DecoderPool.decode_many``: one round trip per chunk), pixels back through shared memory;
- **decoder pool, glibc's default malloc**: the same without the allocator setting the pool gives its processes
  (``MALLOC_TUNING``), to show what isolation costs by itself and what the setting wins back.
All keep every decoded image alive until the round ends, as infer's window does.

    python benchmarks/decode.py [--sizes 1920x1080,224x224] [--workers 2] [--chunk 4] [--repeats 7]

Rounds interleave the contenders in random order (``_common.time_interleaved``); medians and the ratio are
printed with the CPU model and the outside load (cores that other processes used while it ran).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OutsideLoad, time_interleaved  # noqa: E402
from _machine import cpu_model, load_average  # noqa: E402

from auditor_rt.runtime.decoder_pool import DecoderPool  # noqa: E402
from auditor_rt.runtime.imageio import decode_image  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1920x1080,224x224", help="WIDTHxHEIGHT list")
    parser.add_argument("--megapixels", type=float, default=100.0, help="pixels per round, in millions (sets count)")
    parser.add_argument("--workers", type=int, default=2, help="threads, and decoder processes")
    parser.add_argument("--chunk", type=int, default=4, help="files per round trip to a decoder process")
    parser.add_argument("--repeats", type=int, default=7)
    return parser.parse_args(argv)


def generate(folder: Path, width: int, height: int, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        coarse = rng.integers(0, 256, (max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8)
        picture = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        path = folder / f"{width}x{height}_{index:05d}.jpg"
        cv2.imwrite(str(path), picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(str(path))
    return paths


def children_cpu_s(pids: list[int]) -> float:
    """CPU seconds the decoder processes used so far (they are not this process, so OutsideLoad counts them)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f"CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} usable cores; load average "
          f"{load_average()}; {args.workers} threads / decoder processes, chunks of {args.chunk}")
    with tempfile.TemporaryDirectory() as temp, ThreadPoolExecutor(args.workers) as threads, \
            DecoderPool(args.workers) as pool, DecoderPool(args.workers, tuned_malloc=False) as plain:
        pool.warm_up()
        plain.warm_up()
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.lower().split("x"))
            count = max(args.workers * args.chunk, int(args.megapixels * 1e6 / (width * height)))
            paths = generate(Path(temp), width, height, count)
            chunks = [paths[i:i + args.chunk] for i in range(0, count, args.chunk)]
            runners = {"in-process threads": lambda: list(threads.map(decode_image, paths)),
                       "decoder pool": lambda: list(threads.map(pool.decode_many, chunks)),
                       "decoder pool, default malloc": lambda: list(threads.map(plain.decode_many, chunks))}
            decoders = pool.pids() + plain.pids()
            before = children_cpu_s(decoders)
            with OutsideLoad() as outside:
                timings = time_interleaved(runners, count, args.repeats, warmup=1)
            ours = children_cpu_s(decoders) - before
            base = timings["in-process threads"].images_per_s
            print(f"{width}x{height} JPEG, {count} files a round, medians of {args.repeats} rounds; outside load "
                  f"{'n/a' if outside.cores is None else f'{max(0.0, outside.cores - ours / outside.seconds):.2f} cores'}")
            for name, timing in timings.items():
                ratio = timing.images_per_s / base
                spread = sorted(count / seconds for seconds in timing.seconds)
                print(f"  {name:30s} {timing.images_per_s:8.0f} img/s (rounds {spread[0]:.0f}-{spread[-1]:.0f})  "
                      f"ratio {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
