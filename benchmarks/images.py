"""Images per second of ``infer`` on a folder of JPEGs, next to the model's own throughput, in one run.

A folder of 640x480 JPEGs is generated (``--count`` of them), then three contenders run on it with the same
artifact and batch size, overlays included (``infer``'s default):
- **model only**: the audit graph on the same images, already decoded and in memory, in the same batches: the
  ceiling;
- **infer pipeline**: ``run_pipeline`` on an ``ImageFileSource`` (decode threads ahead, each handing files to a decoder process, batching +
  inference, a writer thread that draws the overlays and writes the records and the contact sheet), as
  ``auditor-rt infer`` runs a folder;
- **infer pipeline, in-process decoding**: the same, with the decode threads calling ``decode_image`` themselves,
  as infer did before decoding was contained (``--in-process``: what the isolation costs end to end);
- **naive loop**: one thread that decodes a batch, scores it, draws and writes its overlays and records, then
  decodes the next.

    python benchmarks/images.py --artifact engines/demo [--count 96] [--batch 8] [--size 640x480] [--in-process]

Medians of ``--repeats`` interleaved runs, with the ratio to the model-only throughput. On a machine whose cores
the model already fills, overlapping can only hide waiting (disk), not the CPU that decoding and drawing take.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, load_average  # noqa: E402
from stream import model_only, print_ratios  # noqa: E402

from auditor_rt.runtime import Auditor  # noqa: E402
from auditor_rt.runtime.decoder_pool import Decoded, DecoderPool  # noqa: E402
from auditor_rt.runtime.errors import ImageDecodeError  # noqa: E402
from auditor_rt.runtime.imageio import decode_image  # noqa: E402
from auditor_rt.runtime.image_file_source import ImageFileSource  # noqa: E402
from auditor_rt.runtime.pipeline import run_pipeline  # noqa: E402
from auditor_rt.runtime.sources import Item  # noqa: E402
from auditor_rt.runtime.visualize import draw_caption, write_rgb  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", required=True, type=Path, help="an exported artifact folder")
    parser.add_argument("--count", type=int, default=96, help="JPEGs to generate")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (default: ORT's)")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--in-process", action="store_true",
                        help="also run the pipeline with decoding in this process (the cost of isolation)")
    return parser.parse_args(argv)


def generate_images(folder: Path, count: int, size=(640, 480)) -> list[Path]:
    """Smooth random pictures (so that JPEG decoding does real work), 90% quality."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        picture = cv2.resize(coarse, size, interpolation=cv2.INTER_CUBIC)
        path = folder / f"{i:04d}.jpg"
        cv2.imwrite(str(path), picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def naive_loop(auditor: Auditor, paths: list[Path], batch: int, out: Path) -> float:
    (out / "overlays").mkdir(parents=True)
    start = time.perf_counter()
    with open(out / "results.jsonl", "w") as handle:
        for offset in range(0, len(paths), batch):
            chunk = paths[offset:offset + batch]
            images = [decode_image(str(path)) for path in chunk]
            for path, image, result in zip(chunk, images, auditor.predict(images)):
                picture = draw_caption(result.overlay(image, None), result.caption())
                write_rgb(out / "overlays" / f"{path.stem}.jpg", picture)
                handle.write(json.dumps(result.to_record()) + "\n")
    return len(paths) / (time.perf_counter() - start)


class InProcessDecoder:
    """Stands in for the ``DecoderPool`` of an ``ImageFileSource``: each decode thread decodes in this process."""

    def __init__(self, workers: int):
        self.workers = workers

    def decode_many(self, sources):
        outcomes = []
        for source in sources:
            try:
                image = decode_image(source)
                outcomes.append(Decoded(image, None, image.shape[:2]))
            except ImageDecodeError as exc:
                outcomes.append(exc)
        return outcomes


def pipeline(auditor: Auditor, paths: list[Path], out: Path, decoder=None) -> float:
    """``decoder``: a started ``DecoderPool`` (as ``auditor-rt infer`` starts one while the model loads), or an
    ``InProcessDecoder``."""
    summary = run_pipeline(auditor, ImageFileSource([Item(str(path)) for path in paths], decoder=decoder), out)
    if summary.ok != len(paths):
        raise SystemExit(f"error: the pipeline audited {summary.ok} of {len(paths)} images")
    return summary.ok / summary.seconds


def main(argv=None) -> int:
    args = parse_args(argv)
    if not (args.artifact / "manifest.json").is_file():
        print(f"error: {args.artifact} is not an artifact folder (run `auditor-rt demo` for engines/demo)",
              file=sys.stderr)
        return 2
    names = ("model only (images in memory)", "infer pipeline", "naive one-thread loop",
             "infer pipeline, in-process decoding")[:4 if args.in_process else 3]
    width, height = (int(v) for v in args.size.lower().split("x"))
    results: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        (temp / "images").mkdir()
        paths = generate_images(temp / "images", args.count, (width, height))
        decoded = [decode_image(str(path)) for path in paths]
        print(f"CPU: {cpu_model()}; load average {load_average()}")
        print(f"images: {len(paths)} JPEGs of {width}x{height}; batch {args.batch}; overlays on; artifact "
              f"{args.artifact}")
        with Auditor.load(args.artifact, batch_size=args.batch, threads=args.threads) as auditor, \
                DecoderPool() as decoder:
            decoder.warm_up()
            auditor.predict(decoded[:args.batch])  # warm-up
            for round_ in range(args.repeats):
                results[names[0]].append(model_only(auditor, decoded, args.batch))
                results[names[1]].append(pipeline(auditor, paths, temp / f"run{round_}", decoder))
                results[names[2]].append(naive_loop(auditor, paths, args.batch, temp / f"naive{round_}"))
                if args.in_process:
                    in_process = InProcessDecoder(decoder.workers)
                    results[names[3]].append(pipeline(auditor, paths, temp / f"inproc{round_}", in_process))
    print_ratios(results, names[0], "img/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
