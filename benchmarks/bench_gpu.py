"""The GPU mode of the benchmarks (``python -m benchmarks.run_all --gpu --device cuda``): issue 20's targets, side by
side in one run on one model, batch and image set.

- **PGD-10 evaluation**, images/s of the attack plus the forward that scores it (``predict_logits``, fast path):
  ours in fp32, in bf16 autocast (``amp=True``, objective summed in fp32) and in bf16 with the image tower under
  ``torch.compile`` (``fastpath.compiled``), against the TeCoA-family loop's mirror (``benchmarks/tecoa_loop.py``,
  their fp16 autocast on CUDA), at each class count; achieved FLOP/s of the bf16 row against the bf16 matmul rate.
  One more row, bf16 with the random start drawn on the device (``pgd_attack(start_noise=...)``), and a note with
  the time of drawing it on the CPU, show what our seeded CPU start (the same start on every device) costs.
- **Matmul rate**: n x n by n x n in fp32 and bf16, the ceilings the rows above are read against.
- **One training step** (``training.train_step`` on an engine set up as ``finetune`` does; PGD-2 at 1/255, the
  objective, SGD): TeCoA and TIMA's TAI, ours in fp32 and bf16 (``amp``), TeCoA also with the compiled tower,
  against the TeCoA-family step; the time of a TeCoA epoch of 100,000 images extrapolated from the step time.
- **APGD** (AutoAttack's APGD-CE + APGD-T, 100 steps each, ``attacks.autoattack(version="apgd")``, fast path):
  images/s. Labels are the model's own clean predictions, so every image is attacked (random weights classify at
  chance, and APGD skips images already misclassified).

Targets (issue 20, for one H100/H200; on any other device the ratios are printed as 'info'): PGD-10 >= 2,000
images/s in bf16; ours >= 10x the TeCoA-family loop at 200 classes; a TeCoA epoch of 100,000 images in <= 30 s.
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
from nbhelpers.attacks import autoattack, pgd_attack
from nbhelpers.metrics import predict_logits

TARGET_IMAGES_PER_S = 2000.0  # PGD-10, bf16, one H100/H200
TARGET_VS_TECOA_GPU = {200: 10.0}
EPOCH_IMAGES = 100_000
TARGET_EPOCH_S = 30.0
TARGET_DEVICES = ("H100", "H200")


@dataclass(frozen=True)
class GpuSettings:
    """What the GPU mode runs: attack (pixel units), measurement, matmul size, compile backend and which parts."""

    steps: int = 10
    eps: float = 4 / 255
    alpha: float = 1 / 255
    repeats: int = 3
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
        x, y = common.batch(model, batch_size, c, seed=s.seed, device=device)

        def ours(amp: bool, steps: int = s.steps) -> torch.Tensor:
            return predict_logits(head, x, y, eps=s.eps, alpha=s.alpha, steps=steps, batch_size=batch_size,
                                  device=device, seed=s.seed, fast=True, amp=amp)

        def tecoa(steps: int = s.steps) -> torch.Tensor:
            return peers.evaluate(x, y, texts, eps=s.eps, alpha=s.alpha, steps=steps)

        def ours_given_start(steps: int = s.steps) -> torch.Tensor:
            """ours in bf16 with the random start drawn on the images' device (predict_logits draws it on the CPU,
            seeded, so that every device attacks from the same start): what drawing it costs."""
            noise = 2 * torch.rand(x.shape, device=device) - 1
            adv = pgd_attack(head, x, y, eps=s.eps, alpha=s.alpha, steps=steps, start_noise=noise, fast=True,
                             amp=True)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16), fastpath.fast_forward(head):
                return head(adv).float()

        timings = {"ours, fp32": common.time_call(lambda: ours(False), warmup=lambda: ours(False, 1), **kw),
                   "ours, bf16": common.time_call(lambda: ours(True), warmup=lambda: ours(True, 1), **kw),
                   "ours, bf16, start drawn on the device": common.time_call(
                       ours_given_start, warmup=lambda: ours_given_start(1), **kw)}
        if can_compile:
            with fastpath.compiled(tower, **compile_opts):  # warm-up = compilation (full steps: same graphs)
                timings["ours, bf16 + compiled tower"] = common.time_call(lambda: ours(True), **kw)
        timings["TeCoA-family loop"] = common.time_call(
            tecoa, warmup=lambda: peers.evaluate(x, y % 10, texts[:10], eps=s.eps, alpha=s.alpha, steps=1), **kw)
        fwd, fwd_bwd = common.attack_step_flops(head, x, y)
        flops = s.steps * fwd_bwd + fwd
        for name, t in timings.items():
            pgd.rows.append({"model": model_name, "classes": c, "method": name, "median_s": t.median,
                             "images_per_s": batch_size / t.median, "repeats": len(t.times),
                             "tflop_per_s": flops / t.median / 1e12})
        best_name = min((n for n in timings if n.startswith("ours") and "start drawn" not in n),
                        key=lambda n: timings[n].median)
        t_bf16, t_best, t_peer = timings["ours, bf16"], timings[best_name], timings["TeCoA-family loop"]
        tag = f"GPU PGD-{s.steps}, {model_name}, {c} classes"
        pgd.ratios.append(common.Ratio(f"{tag}: bf16 images/s / {TARGET_IMAGES_PER_S:,.0f}",
                                       batch_size / t_bf16.median / TARGET_IMAGES_PER_S, 1.0 if judged else None))
        if can_compile:
            t_comp = timings["ours, bf16 + compiled tower"]
            pgd.ratios.append(common.Ratio(f"{tag}: bf16 + compiled images/s / {TARGET_IMAGES_PER_S:,.0f}",
                                           batch_size / t_comp.median / TARGET_IMAGES_PER_S,
                                           1.0 if judged else None))
            pgd.ratios.append(common.Ratio(f"{tag}: compiled / eager (bf16)", t_bf16.median / t_comp.median))
        pgd.ratios.append(common.Ratio(f"{tag}: bf16 / fp32 (ours)", timings["ours, fp32"].median / t_bf16.median))
        pgd.ratios.append(common.Ratio(f"{tag}: bf16, start drawn on the device / drawn on the CPU (ours)",
                                       t_bf16.median / timings["ours, bf16, start drawn on the device"].median))
        pgd.ratios.append(common.Ratio(f"{tag}: ours ({best_name.removeprefix('ours, ')}) / TeCoA-family loop",
                                       t_peer.median / t_best.median,
                                       TARGET_VS_TECOA_GPU.get(c) if judged else None))
        pgd.ratios.append(common.Ratio(f"{tag}: achieved FLOP/s (bf16) / bf16 matmul rate",
                                       flops / t_bf16.median / rates[torch.bfloat16],
                                       note="forward + input-gradient FLOPs of the image encoder"))

    g = torch.Generator().manual_seed(s.seed)
    t_noise = common.time_call(lambda: torch.rand((batch_size, 3, model.image_size, model.image_size), generator=g),
                               device=torch.device("cpu"), repeats=s.repeats, budget_s=s.budget_s)
    pgd.notes.append(f"drawing one batch's random start on the CPU (seeded, as predict_logits does): "
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
    t = common.time_call(lambda: autoattack(head, x, y, eps=s.eps, n_classes=c, seed=s.seed, fast=True),
                         device=device, repeats=1, budget_s=s.budget_s)
    return common.Section(f"APGD (APGD-CE + APGD-T, 100 steps each), {model_name}, {c} classes, batch {batch_size}, "
                          f"{device.type}",
                          rows=[{"attack": "APGD-CE + APGD-T (fp32, fast path)", "median_s": t.median,
                                 "images_per_s": batch_size / t.median, "repeats": len(t.times)}],
                          notes=["labels are the model's clean predictions, so APGD-CE attacks every image"])
