"""The training input pipeline alone: images/s (and per core) of ``TrainData.batch(step)`` on the paper profile,
reading, decoding and preprocessing full-size JPEGs from a generated folder in TinyImageNet's layout, with the
decoding in 0 (this process), 1, 2, ... worker processes (``decode_workers``; the same tensors in the same order).

    python -m benchmarks.bench_input --images 1024 --batch 128 --workers 0 1 2

The folder (``--folder``, default a temporary one) holds ``tinyimagenet/{train,val}/<wnid>/<k>.JPEG`` with
``--size`` px JPEGs (default 500 x 375, ImageNet's typical size; TinyImageNet's own are 64 px) of smooth random
content, so that each decodes about as long as a photograph of that size. Its class names fall back to the wnids
(a warning): the names do not change the pipeline's cost. Nothing here is a test; the numbers are printed and,
with ``--out``, written as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

from nbhelpers import models, paper_data, training
from nbhelpers.config import FinetuneConfig


def write_jpeg_folder(root: Path, *, images: int, classes: int, size: tuple[int, int], seed: int = 0) -> Path:
    """<root>/tinyimagenet/{train,val}/<wnid>/<k>.JPEG: `images` train JPEGs of `size` (W, H) over `classes` class
    folders (and one val image per class), smooth random colour fields plus noise (quality 90). Returns root."""
    rng = np.random.default_rng(seed)
    w, h = size
    for split, per_class in (("train", -(-images // classes)), ("val", 1)):
        for c in range(classes):
            folder = root / "tinyimagenet" / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class if split == "val" else min(per_class, images - c * per_class)):
                coarse = rng.integers(0, 256, (h // 32 + 2, w // 32 + 2, 3), dtype=np.uint8)
                field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.int16)
                pixels = np.clip(field + rng.integers(-12, 13, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{k}.JPEG", quality=90)
    return root


def time_pipeline(root: Path, *, batch: int, workers: int, steps: int, image_size: int = 224) -> dict[str, float]:
    """Seconds and images/s of `steps` batches (after one untimed batch that starts the workers) of TrainData on
    the paper profile over root, with `workers` decoding processes; per core = images/s / max(workers, 1)."""
    cfg = FinetuneConfig(profile="paper", data_root=str(root), train_batch_size=batch, decode_workers=workers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # class names fall back to the wnids: no cost difference
        data = training.TrainData(cfg, preprocess=models.ProtocolPreprocess("tecoa", image_size=image_size))
    try:
        data.batch(0, batch)
        t0 = time.perf_counter()
        for step in range(1, steps + 1):
            x, _ = data.batch(step, batch)
        seconds = time.perf_counter() - t0
    finally:
        data.close()
    rate = steps * batch / seconds
    return {"workers": workers, "batch": batch, "steps": steps, "seconds": round(seconds, 3),
            "images_per_s": round(rate, 1), "images_per_s_per_core": round(rate / max(workers, 1), 1),
            "image_shape": list(x.shape[1:])}


def main(argv: list[str] | None = None) -> int:
    """Generate the folder (or reuse --folder), time the pipeline for each --workers, print a table."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_input", description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1024, help="train JPEGs to generate")
    ap.add_argument("--classes", type=int, default=8, help="class folders (TinyImageNet has 200)")
    ap.add_argument("--size", type=int, nargs=2, default=[500, 375], metavar=("W", "H"), help="JPEG size in px")
    ap.add_argument("--batch", type=int, default=128, help="training batch (TinyImageNet's TeCoA: 128)")
    ap.add_argument("--steps", type=int, default=4, help="timed batches per setting")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="decode_workers settings to time")
    ap.add_argument("--folder", default="", help="an existing generated folder to reuse (default: a temporary one)")
    ap.add_argument("--out", default="", help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    if args.images < args.batch or args.classes < 1 or args.steps < 1 or min(args.workers) < 0:
        ap.error("need --images >= --batch, --classes >= 1, --steps >= 1, --workers >= 0")
    # a generated folder has no official checksums, nor TinyImageNet's 100,000 images: allowed while this runs only
    # (restored after, so an in-process caller, e.g. the test suite, keeps its checks)
    allow = {paper_data.SKIP_CHECKSUMS_ENV: "1", paper_data.ALLOW_PARTIAL_ENV: "1"}
    with mock.patch.dict(os.environ, allow), tempfile.TemporaryDirectory(prefix="bench_input_") as tmp:
        root = Path(args.folder) if args.folder else Path(tmp)
        if not (root / "tinyimagenet").exists():
            t0 = time.perf_counter()
            write_jpeg_folder(root, images=args.images, classes=args.classes, size=tuple(args.size))
            print(f"wrote {args.images} JPEGs of {args.size[0]}x{args.size[1]} px in {time.perf_counter() - t0:.0f} s "
                  f"under {root}")
        rows = [time_pipeline(root, batch=args.batch, workers=w, steps=args.steps) for w in args.workers]
    print(f"input pipeline (read + decode + resize to {rows[0]['image_shape'][-1]} px + to tensor), batch "
          f"{args.batch}, {os.cpu_count()} CPU cores here, torch threads {torch.get_num_threads()}:")
    print(f"{'workers':>8} {'images/s':>10} {'per core':>10} {'s/batch':>8}")
    for r in rows:
        print(f"{r['workers']:>8} {r['images_per_s']:>10.1f} {r['images_per_s_per_core']:>10.1f} "
              f"{r['seconds'] / r['steps']:>8.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
