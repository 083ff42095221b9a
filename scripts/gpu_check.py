#!/usr/bin/env python
"""The prepared GPU check (issue 20, part 4): the paper profile's helper calls at small sizes, then the GPU benchmark.

    python scripts/gpu_check.py --size full --out /tmp/gpu_check          # one H100/H200: about 5 min (budget 8)
    python scripts/gpu_check.py --size tiny --out /tmp/gpu_check --device cpu   # a smoke run (tests/test_gpu_check.py)

``scripts/gpu_check.sh`` wraps it (environment, the ``gpu`` pytest tests, the summary). Nothing is downloaded: a
data root in the real on-disk layouts is written under OUT (tests/paper_fixtures.py: CIFAR-10's pickled batches,
TinyImageNet's class folders, EuroSAT's 2750/<Class>/ JPEGs; about 1,000 images per dataset at full size) and the
backbone is open_clip ViT-B-32 with random weights (``pretrained="none"``; ViT-S-32 at tiny size). The helper calls are the ones notebooks
00-05 make on the paper profile, in their order: zero-shot evaluation (00/05), the margin offset (01), IAT text
tuning (03), TeCoA, TAI and TIMA fine-tuning with bf16 and prefetching (TeCoA with the compiled tower) (04), the evaluation
of the trained models (05). Then ``python -m benchmarks.run_all --gpu`` (full: ViT-B/32, batch 256, 10 and 200
classes) writes its record to OUT and, with --results-md, the GPU section of that file.

Caches, results and figures go under OUT (TIMA_CACHE_DIR, TIMA_RESULTS_DIR, TIMA_FIGURES_DIR), never into the
repository. OUT/gpu_check.json holds each stage's wall time and what it produced; the last lines printed are the
summary.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Size:
    """How big each stage is: the backbone, images written per dataset, evaluated, PGD steps, fine-tuning steps and
    batch, and the benchmark's arguments."""

    model: str
    cifar_test: int
    tiny_classes: int
    tiny_per_class: int
    eurosat_per_class: int
    eval_n: int
    pgd_steps: int
    offset_n: int
    finetune_steps: int
    train_batch_size: int
    iat_steps: int
    iat_images: int
    batch_size: int
    bench: tuple[str, ...]
    pipeline: tuple[str, ...] = ()


SIZES = {
    # a smoke run on any CPU: every stage runs, on a handful of images, with open_clip's ViT-S-32 (the same code
    # path as ViT-B-32 at a quarter of its size); the benchmark on the mini CLIP without its compiled and APGD rows
    # (compiling on a CPU takes minutes; tests/test_gpu_path.py checks the compiled attack on a tiny network)
    "tiny": Size(model="ViT-S-32", cifar_test=8, tiny_classes=2, tiny_per_class=2, eurosat_per_class=1, eval_n=2, pgd_steps=1,
                 offset_n=2, finetune_steps=1, train_batch_size=2, iat_steps=1, iat_images=2, batch_size=2,
                 bench=("--models", "mini", "--classes", "10", "--batch", "2", "--steps", "1", "--repeats", "1",
                        "--matmul-n", "128", "--no-compile", "--no-apgd"),
                 pipeline=("--images", "8", "--classes", "2", "--size", "80", "60", "--batch", "4", "--steps", "1",
                           "--workers", "0", "2")),
    # one H100/H200 in at most 8 minutes: about 1,000 images per dataset, 10 steps per method, the full benchmark
    "full": Size(model="ViT-B-32", cifar_test=1000, tiny_classes=200, tiny_per_class=5, eurosat_per_class=100, eval_n=1000, pgd_steps=10,
                 offset_n=256, finetune_steps=10, train_batch_size=128, iat_steps=20, iat_images=512, batch_size=256,
                 bench=("--models", "vit-b-32", "--classes", "200,1000", "--batch", "256", "--repeats", "5",
                        "--budget", "5"),
                 pipeline=("--images", "2048", "--batch", "128", "--steps", "4", "--workers", "0", "4", "8", "14")),
}
EUROSAT_CLASSES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake")


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (argparse's own defaults formatter: nbhelpers is imported only once it runs)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), required=True,
                    help='"full": ViT-B-32 at the sizes of one H100/H200 run; "tiny": a CPU smoke run')
    ap.add_argument("--out", required=True, help="output folder (data root, caches, records, summary)")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cuda:N or cpu")
    ap.add_argument("--results-md", default=None, help="also write the benchmark's GPU section into this file (None: no file)")
    ap.add_argument("--no-bench", action="store_true", help="leave out the benchmark")
    return ap


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    return build_parser().parse_args(argv)


class Stages:
    """Runs named stages, printing and recording each one's wall time and result; with a path, the record so far is
    written there (atomically) after every stage, so a run cut short (a time limit, a failed stage) leaves its
    finished stages on disk."""

    def __init__(self, path: Path | None = None, header: dict | None = None) -> None:
        self.record: dict[str, dict] = {}
        self.path, self.header = path, dict(header or {})

    def write(self, **extra: object) -> None:
        """Write {header, stages so far, extra} to the path (if any), replacing the file atomically."""
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({**self.header, "stages": self.record, **extra}, indent=1))
        os.replace(tmp, self.path)

    def run(self, name: str, fn, *args, **kwargs):
        """fn(*args, **kwargs), timed; its result (a dict, or anything) is recorded under name."""
        print(f"[gpu_check] {name} ...", flush=True)
        t0 = time.time()
        try:
            result = fn(*args, **kwargs)
        except Exception as err:
            self.record[name] = {"seconds": round(time.time() - t0, 1), "error": repr(err)[:2000]}
            self.write(complete=False)
            raise
        seconds = time.time() - t0
        self.record[name] = {"seconds": round(seconds, 1), **(result if isinstance(result, dict) else {})}
        print(f"[gpu_check] {name}: {seconds:.1f} s {json.dumps(self.record[name])}", flush=True)
        self.write(complete=False)
        return result


def main(argv: list[str] | None = None) -> int:
    """Write the data root, run the helper calls and the benchmark, write OUT/gpu_check.json."""
    args = parse_args(argv)
    size = SIZES[args.size]
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for var, sub in (("TIMA_CACHE_DIR", "cache"), ("TIMA_RESULTS_DIR", "results"), ("TIMA_FIGURES_DIR", "figures")):
        os.environ[var] = str(out / sub)  # before nbhelpers is imported: paths reads them once
    os.environ.update(HF_HUB_OFFLINE="1", TIMA_SKIP_CHECKSUMS="1", MPLBACKEND="Agg")
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))

    import torch
    from paper_fixtures import write_paper_root

    from nbhelpers import evaluation, suite, training
    from nbhelpers.config import EvaluationConfig
    from nbhelpers.fastpath import compile_available
    from nbhelpers.models import create_model_and_transforms
    from nbhelpers.utils import select_device

    device = select_device(args.device)
    t_start = time.time()
    stages = Stages(out / "gpu_check.json", {"size": args.size, "device": str(device),
                                             "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                                             "torch": torch.__version__, "size_settings": asdict(size)})
    data_root = out / "data"

    def write_data() -> dict:
        write_paper_root(data_root, cifar_test=size.cifar_test, tiny_classes=size.tiny_classes,
                         tiny_train_per_class=size.tiny_per_class, tiny_val_per_class=size.tiny_per_class,
                         eurosat_classes=EUROSAT_CLASSES[:max(2, min(10, size.eurosat_per_class))],
                         eurosat_per_class=size.eurosat_per_class)
        return {"files": sum(1 for p in data_root.rglob("*") if p.is_file())}

    stages.run("data root (real layouts)", write_data)
    compile_ok = compile_available(device.type)[0] and device.type == "cuda"
    cfg = EvaluationConfig.from_params(
        profile="paper", model=size.model, pretrained="none", data_root=str(data_root), device=str(device),
        batch_size=size.batch_size, amp=device.type == "cuda", configs="knobs", finetune_lr=1e-5,
        finetune_steps=size.finetune_steps, train_batch_size=size.train_batch_size,
        warmup_steps=min(2, size.finetune_steps), iat_steps=size.iat_steps, iat_images=size.iat_images,
        datasets=["cifar10", "eurosat"], n_samples=size.eval_n, n_strong=min(32, size.eval_n))
    base, preprocess = stages.run(f"{size.model} (random weights)",
                                  lambda: create_model_and_transforms(**cfg.model_spec(), device=device))
    eval_kw = dict(profile="paper", attacks=[f"pgd{size.pgd_steps}"], n=size.eval_n, batch_size=size.batch_size,
                   data_root=str(data_root), device=device, fast=True, amp=cfg.amp, preprocess=preprocess)

    def summary(rows) -> dict:
        return {"cells": len(rows), "images": int(rows.n.sum()),
                "accuracy": {f"{r.model}/{r.dataset}/{r.attack}@{r.eps:g}": round(float(r.accuracy), 4)
                             for r in rows.itertuples()}}

    stages.run("00/05 zero-shot evaluation (clean + PGD at 1 and 4/255, bf16 on CUDA)",
               lambda: summary(evaluation.evaluate({"zero_shot": evaluation.zero_shot_model(base, device=device)},
                                                   datasets=["cifar10", "eurosat"], eps_list=[1.0, 4.0], **eval_kw)))
    offset = stages.run("01 margin offset on the fine-tuning set", lambda: training.measure_margin_offset(
        base, cfg.finetune_config("tai"), eps_large=cfg.offset_eps, n=size.offset_n, steps=size.pgd_steps,
        preprocess=preprocess, device=device))
    iat_path = stages.run("03 IAT text tuning", lambda: suite.iat_projection_for(cfg, base, preprocess=preprocess,
                                                                                device=device, progress=False))
    models = {}
    for name in ("tecoa", "tai", "tima"):
        # the compiled tower for TeCoA only: compiling ViT-B/32 costs about a minute per method
        device_knobs = {"compile_tower": compile_ok and name == "tecoa", "prefetch": "auto"}

        def train(name: str = name, device_knobs: dict = device_knobs) -> dict:
            models[name] = suite.build_eval_model(name, cfg, base, margin_offset=offset["offset_cosine"],
                                                  iat_path=iat_path, device=device, progress=False, **device_knobs)
            history = models[name].run.history
            return {"steps": len(history), "first_loss": round(float(history.loss.iloc[0]), 4),
                    "last_loss": round(float(history.loss.iloc[-1]), 4), **device_knobs, "amp": cfg.amp}

        stages.run(f"04 fine-tuning {name} ({size.finetune_steps} steps, batch {size.train_batch_size})", train)
    stages.run("05 evaluation of the trained models (PGD at 4/255)",
               lambda: summary(evaluation.evaluate(models, datasets=["cifar10"], eps_list=[4.0], **eval_kw)))
    if not args.no_bench:
        def bench() -> dict:
            cmd = [sys.executable, "-m", "benchmarks.run_all", "--gpu", "--device", str(device), *size.bench,
                   "--out", str(out / "bench_gpu.json"),
                   *(["--results-md", str(Path(args.results_md).resolve())] if args.results_md else [])]
            proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, TQDM_DISABLE="1"), text=True,
                                  capture_output=True)
            (out / "bench_gpu.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                raise RuntimeError(f"benchmark failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
            ratios = [r for s in json.loads((out / "bench_gpu.json").read_text())["sections"] for r in s["ratios"]]
            return {"ratios": {r["name"]: [round(r["value"], 3), r["verdict"]] for r in ratios}}

        stages.run("benchmark (python -m benchmarks.run_all --gpu)", bench)

        def pipeline() -> dict:
            cmd = [sys.executable, "-m", "benchmarks.bench_input", *size.pipeline, "--out", str(out / "pipeline.json")]
            proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, TQDM_DISABLE="1"), text=True,
                                  capture_output=True)
            (out / "pipeline.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                raise RuntimeError(f"pipeline benchmark failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            rows = json.loads((out / "pipeline.json").read_text())
            return {"images_per_s": {str(r["workers"]): r["images_per_s"] for r in rows},
                    "images_per_s_per_core": {str(r["workers"]): r["images_per_s_per_core"] for r in rows}}

        stages.run("training input pipeline (python -m benchmarks.bench_input, full-size JPEGs)", pipeline)
    total = time.time() - t_start
    record = {"size": args.size, "device": str(device),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "torch": torch.__version__, "seconds": round(total, 1), "size_settings": asdict(size),
              "stages": stages.record}
    stages.header = {k: v for k, v in record.items() if k != "stages"}
    stages.write(complete=True)
    print(f"[gpu_check] done in {total:.0f} s on {record['gpu'] or device}; record: {out / 'gpu_check.json'}")
    for name, (value, verdict) in record["stages"].get("benchmark (python -m benchmarks.run_all --gpu)",
                                                        {}).get("ratios", {}).items():
        print(f"[gpu_check] {verdict:>4}  {value:>8.3f}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
