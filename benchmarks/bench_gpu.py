"""The GPU mode of the benchmarks (``python -m benchmarks.run_all --gpu --device cuda``): issue 20's targets, side by
side in one run on one model, batch and image set.

- **PGD-10 evaluation**, images/s of the attack plus the forward that scores it (``predict_logits``, fast path),
  with the images starting in host memory (pinned prefetch and copies included), as a real evaluation's do: ours in
  fp32, in bf16 autocast (``amp=True``, objective summed in fp32), in bf16 with the counter-based random start drawn
  on the device (``start="counter"``, the paper profile's default) and in bf16 with the image tower under
  ``torch.compile`` (``fastpath.compiled``), against the TeCoA-family loop's mirror (``benchmarks/tecoa_loop.py``,
  their fp16 autocast on CUDA), at each class count. Every row: min and median of the repeats, the GPU-only median
  (the same call with the images already on the device), GFLOP per image and the achieved TFLOP/s, also as a
  fraction of the measured bf16 matmul rate. ViT-B/32 has QuickGELU, as OpenAI's weights (common.load_model).
- **Matmul rate**: n x n by n x n in fp32 and bf16, the ceilings the rows above are read against.
- **One training step** (``training.train_step`` on an engine set up as ``finetune`` does; PGD-2 at 1/255, the
  objective, SGD): TeCoA and TIMA's TAI, ours in fp32 and bf16 (``amp``), TeCoA also with the compiled tower,
  against the TeCoA-family step; the time of a TeCoA epoch of 100,000 images extrapolated from the step time.
- **APGD** (AutoAttack's APGD-CE + APGD-T, 100 steps each, ``attacks.autoattack(version="apgd")``, fast path):
  images/s. Labels are the model's own clean predictions, so every image is attacked (random weights classify at
  chance, and APGD skips images already misclassified).

Targets (issues 20 and 34, for one H100/H200; on any other device the ratios are printed as 'info'): PGD-10 >= 2,000
images/s in bf16 from host memory; ours >= 4x the TeCoA-family loop at 200 classes and >= 10x at 1,000; a TeCoA
epoch of 100,000 images in <= 30 s (step time only; benchmarks/bench_input.py times the input pipeline).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass

import torch

from benchmarks import common
from benchmarks.bench_train_step import _engine
from benchmarks.tecoa_loop import TecoaFamily
from nbhelpers import fastpath, training
from nbhelpers.attacks import autoattack
from nbhelpers.metrics import predict_logits

TARGET_IMAGES_PER_S = 2000.0  # PGD-10, bf16, one H100/H200
TARGET_VS_TECOA_GPU = {200: 4.0, 1000: 10.0}  # issue 34: their loop does 2.24x our FLOPs at 200 classes
EPOCH_IMAGES = 100_000
TARGET_EPOCH_S = 30.0
TARGET_DEVICES = ("H100", "H200")


@dataclass(frozen=True)
class GpuSettings:
    """What the GPU mode runs: attack (pixel units), measurement, matmul size, compile backend and which parts."""

    steps: int = 10
    eps: float = 4 / 255
    alpha: float = 1 / 255
    repeats: int = 5
    budget_s: float = 10.0
    seed: int = 0
    matmul_n: int = 8192
    compile_backend: str = "inductor"  # torch.compile's backend ("aot_eager" skips kernel generation: smoke runs)
    train_classes: int | None = None  # class count of the training-step and APGD rows (None: the largest)
    apgd: bool = True
    compile: bool = True  # the rows with the image tower under torch.compile


def _targets_apply(device: torch.device) -> bool:
    """Whether the issue's targets (set for one H100/H200) are judged on this device."""
    return device.type == "cuda" and any(t in torch.cuda.get_device_name(device) for t in TARGET_DEVICES)


def _compile_note(device: torch.device, backend: str, wanted: bool = True) -> tuple[bool, str]:
    """(whether compiled rows run, why not / which backend)."""
    if not wanted:
        return False, "compiled rows left out (--no-compile)"
    ok, why = fastpath.compile_available(device.type) if backend == "inductor" else (True, "")
    return ok, (f"torch.compile backend {backend}" if ok else f"compiled rows skipped: {why}")


def bench_gpu(model_name: str, classes: list[int], *, batch_size: int, device: torch.device,
              settings: GpuSettings = GpuSettings()) -> list[common.Section]:
    """The GPU mode's sections (PGD, matmul, training step, APGD) for one model; ratios judged on H100/H200 only."""
    s = settings
    judged = _targets_apply(device)
    common.seed_everything(s.seed)
    model, note = common.load_model(model_name, device=device)
    can_compile, compile_note = _compile_note(device, s.compile_backend, s.compile)
    compile_opts = {"backend": s.compile_backend}
    kw = dict(device=device, repeats=s.repeats, budget_s=s.budget_s)

    rates = {dt: common.matmul_rate(device=device, n=s.matmul_n, dtype=dt) for dt in (torch.float32, torch.bfloat16)}
    mm = common.Section(f"matmul rate, {s.matmul_n} x {s.matmul_n}, {device.type}",
                        rows=[{"dtype": str(dt).replace("torch.", ""), "tflop_per_s": r / 1e12} for dt, r in rates.items()],
                        notes=["fp32 matmuls as torch runs them by default (TF32 off unless "
                               f"torch.backends.cuda.matmul.allow_tf32; here {_tf32()})"])

    pgd = common.Section(f"PGD-{s.steps} evaluation (GPU mode), {note}, batch {batch_size}, {device.type}",
                         notes=[compile_note])
    peer_model = copy.deepcopy(model)
    peers = TecoaFamily(peer_model.clip, peer_model.tokenize, image_size=model.image_size, mean=model.mean,
                        std=model.std, device=device, amp=device.type == "cuda")
    tower = model.clip.visual
    for c in common.progress(classes, desc=f"GPU PGD {model_name}"):
        head, texts = common.zero_shot_head(model, c, device=device)
        x_dev, y_dev = common.batch(model, batch_size, c, seed=s.seed, device=device)
        x, y = x_dev.cpu(), y_dev.cpu()  # where a real evaluation's images start: host memory

        def ours(amp: bool, steps: int = s.steps, images: torch.Tensor = x, start: str = "legacy") -> torch.Tensor:
            return predict_logits(head, images, y if images is x else y_dev, eps=s.eps, alpha=s.alpha, steps=steps,
                                  batch_size=batch_size, device=device, seed=s.seed, fast=True, amp=amp, start=start)

        def tecoa(steps: int = s.steps) -> torch.Tensor:
            return peers.evaluate(x.to(device), y.to(device), texts, eps=s.eps, alpha=s.alpha, steps=steps)

        timings = {"ours, fp32": common.time_call(lambda: ours(False), warmup=lambda: ours(False, 1), **kw),
                   "ours, bf16": common.time_call(lambda: ours(True), warmup=lambda: ours(True, 1), **kw),
                   "ours, bf16, counter start": common.time_call(
                       lambda: ours(True, start="counter"), warmup=lambda: ours(True, 1, start="counter"), **kw)}
        gpu_only = {"ours, bf16": common.time_call(lambda: ours(True, images=x_dev), **kw),
                    "ours, bf16, counter start": common.time_call(
                        lambda: ours(True, images=x_dev, start="counter"), **kw)}
        if can_compile:
            with fastpath.compiled(tower, **compile_opts):  # warm-up = compilation (full steps: same graphs)
                timings["ours, bf16 + compiled tower"] = common.time_call(lambda: ours(True), **kw)
                timings["ours, bf16 + compiled tower, counter start"] = common.time_call(
                    lambda: ours(True, start="counter"), **kw)
                gpu_only["ours, bf16 + compiled tower, counter start"] = common.time_call(
                    lambda: ours(True, images=x_dev, start="counter"), **kw)
        timings["TeCoA-family loop"] = common.time_call(
            tecoa, warmup=lambda: peers.evaluate(x_dev, y_dev % 10, texts[:10], eps=s.eps, alpha=s.alpha, steps=1),
            **kw)
        fwd, fwd_bwd = common.attack_step_flops(head, x_dev, y_dev)
        flops = s.steps * fwd_bwd + fwd
        for name, t in timings.items():
            device_t = gpu_only.get(name)
            pgd.rows.append({"model": model_name, "classes": c, "method": name, "min_s": t.min, "median_s": t.median,
                             "images_per_s": batch_size / t.median, "repeats": len(t.times),
                             "gpu_only_median_s": device_t.median if device_t else float("nan"),
                             "gflop_per_image": flops / batch_size / 1e9, "tflop_per_s": flops / t.median / 1e12,
                             "of_bf16_matmul": flops / t.median / rates[torch.bfloat16]})
        best_name = min((n for n in timings if n.startswith("ours")), key=lambda n: timings[n].median)
        t_bf16, t_best, t_peer = timings["ours, bf16"], timings[best_name], timings["TeCoA-family loop"]
        tag = f"GPU PGD-{s.steps}, {model_name}, {c} classes"
        pgd.ratios.append(common.Ratio(f"{tag}: best of ours ({best_name.removeprefix('ours, ')}) images/s / "
                                       f"{TARGET_IMAGES_PER_S:,.0f}", batch_size / t_best.median / TARGET_IMAGES_PER_S,
                                       1.0 if judged else None, "images from host memory"))
        if can_compile:
            t_comp = timings["ours, bf16 + compiled tower"]
            pgd.ratios.append(common.Ratio(f"{tag}: compiled / eager (bf16)", t_bf16.median / t_comp.median))
        pgd.ratios.append(common.Ratio(f"{tag}: bf16 / fp32 (ours)", timings["ours, fp32"].median / t_bf16.median))
        pgd.ratios.append(common.Ratio(f"{tag}: bf16, counter start (drawn on the device) / legacy start (CPU)",
                                       t_bf16.median / timings["ours, bf16, counter start"].median))
        pgd.ratios.append(common.Ratio(f"{tag}: ours ({best_name.removeprefix('ours, ')}) / TeCoA-family loop",
                                       t_peer.median / t_best.median,
                                       TARGET_VS_TECOA_GPU.get(c) if judged else None))
        pgd.ratios.append(common.Ratio(f"{tag}: achieved FLOP/s (best of ours) / bf16 matmul rate",
                                       flops / t_best.median / rates[torch.bfloat16],
                                       note="forward + input-gradient FLOPs of the image encoder and head"))

    pgd.notes.append(f"{s.repeats} repeats per row (min_s, median_s); images start in host memory (end to end: "
                     "pinned prefetch and copies included); gpu_only_median_s: the same call with the images already "
                     "on the device; of_bf16_matmul: tflop_per_s over the measured bf16 matmul rate")
    g = torch.Generator().manual_seed(s.seed)
    t_noise = common.time_call(lambda: torch.rand((batch_size, 3, model.image_size, model.image_size), generator=g),
                               device=torch.device("cpu"), repeats=s.repeats, budget_s=s.budget_s)
    pgd.notes.append(f"drawing one batch's legacy random start on the CPU (seeded, as predict_logits does on mini): "
                     f"{t_noise.median * 1e3:.0f} ms")
    c_train = s.train_classes or max(classes)
    train = _bench_train(model, model_name, c_train, batch_size=batch_size, device=device, settings=s,
                         can_compile=can_compile, judged=judged)
    sections = [mm, pgd, train]
    if s.apgd:
        sections.append(_bench_apgd(model, model_name, c_train, batch_size=batch_size, device=device, settings=s))
    return sections


def _tf32() -> str:
    return "on" if torch.backends.cuda.matmul.allow_tf32 else "off"


def _bench_train(model, model_name: str, c: int, *, batch_size: int, device: torch.device, settings: GpuSettings,
                 can_compile: bool, judged: bool) -> common.Section:
    """One training step, TeCoA and TAI: ours fp32 / bf16 / bf16 + compiled tower, and the TeCoA-family step."""
    s = settings
    head, texts = common.zero_shot_head(model, c, device=device)
    x, y = common.batch(model, batch_size, c, seed=s.seed, device=device)
    noise = (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(s.seed)) - 1).to(device)
    base_cfg = training.FinetuneConfig.from_params()
    section = common.Section(f"one training step (PGD-{base_cfg.train_pgd_steps} at train eps {base_cfg.train_eps:g}"
                             f"/255 + objective + SGD), {model_name}, {c} classes, batch {batch_size}, {device.type}")
    kw = dict(device=device, repeats=s.repeats, budget_s=s.budget_s)
    peer_model = copy.deepcopy(model)
    peers = TecoaFamily(peer_model.clip, peer_model.tokenize, image_size=model.image_size, mean=model.mean,
                        std=model.std, device=device, amp=device.type == "cuda")
    peer_opt = torch.optim.SGD(peer_model.clip.visual.parameters(), lr=base_cfg.finetune_lr,
                               momentum=base_cfg.momentum)
    for method, label in (("tecoa", "TeCoA"), ("tai", "TIMA (TAI)")):
        timings: dict[str, common.Timing] = {}
        for name, amp, comp in (("ours, fp32", False, False), ("ours, bf16", True, False),
                                ("ours, bf16 + compiled tower", True, True)):
            if comp and (not can_compile or method != "tecoa"):  # one compiled step: compiling costs a minute
                continue
            cfg = dataclasses.replace(base_cfg, method=method, amp=amp)
            engine = _engine(model, head.class_embeddings, cfg, device=device)
            step = cfg.warmup_steps
            ctx = (fastpath.compiled(engine.image_encoder.model.visual, backend=s.compile_backend) if comp
                   else contextlib.nullcontext())
            with ctx:
                timings[name] = common.time_call(lambda: training.train_step(engine, step, x, y, noise), **kw)
        if method == "tecoa":
            timings["TeCoA-family step"] = common.time_call(
                lambda: peers.train_step(peer_opt, x, y, texts, eps=base_cfg.train_eps / 255,
                                         alpha=base_cfg.train_alpha / 255, steps=base_cfg.train_pgd_steps),
                warmup=lambda: peers.train_step(peer_opt, x, y % 10, texts[:10], eps=base_cfg.train_eps / 255,
                                                alpha=base_cfg.train_alpha / 255, steps=1), **kw)
        for name, t in timings.items():
            section.rows.append({"objective": label, "method": name, "median_s": t.median,
                                 "images_per_s": batch_size / t.median, "repeats": len(t.times),
                                 "epoch_100k_s": EPOCH_IMAGES / batch_size * t.median})
        best = min((n for n in timings if n.startswith("ours")), key=lambda n: timings[n].median)
        epoch = EPOCH_IMAGES / batch_size * timings[best].median
        tag = f"GPU train step {label}, {model_name}, {c} classes"
        section.ratios.append(common.Ratio(f"{tag}: {TARGET_EPOCH_S:g} s / epoch of {EPOCH_IMAGES:,} ({best})",
                                           TARGET_EPOCH_S / epoch, 1.0 if judged and method == "tecoa" else None,
                                           f"epoch extrapolated: {epoch:.1f} s"))
        if "TeCoA-family step" in timings:
            section.ratios.append(common.Ratio(f"{tag}: {best} / TeCoA-family step",
                                               timings["TeCoA-family step"].median / timings[best].median))
    section.notes.append(f"epoch_100k_s = {EPOCH_IMAGES:,} / batch x step time (one process, data loading not "
                         "included: a real epoch also reads and decodes its images, which prefetch overlaps)")
    return section


def _bench_apgd(model, model_name: str, c: int, *, batch_size: int, device: torch.device,
                settings: GpuSettings) -> common.Section:
    """APGD-CE + APGD-T (100 steps each, AutoAttack's settings) on one batch, labels = clean predictions."""
    s = settings
    head, _ = common.zero_shot_head(model, c, device=device)
    x, _ = common.batch(model, batch_size, c, seed=s.seed, device=device)
    with torch.no_grad():
        y = head(x).argmax(1)
    rows = []
    for label, amp in (("fp32", False), ("bf16", True)):
        t = common.time_call(lambda amp=amp: autoattack(head, x, y, eps=s.eps, n_classes=c, seed=s.seed, fast=True,
                                                        amp=amp), device=device, repeats=1, budget_s=s.budget_s)
        rows.append({"attack": f"APGD-CE + APGD-T ({label}, fast path)", "min_s": t.min, "median_s": t.median,
                     "images_per_s": batch_size / t.median, "repeats": len(t.times)})
    return common.Section(f"APGD (APGD-CE + APGD-T, 100 steps each), {model_name}, {c} classes, batch {batch_size}, "
                          f"{device.type}", rows=rows,
                          notes=["labels are the model's clean predictions, so APGD-CE attacks every image; bf16's "
                                 "strength against fp32: tests/test_gpu_path.py (paired bound)"])
