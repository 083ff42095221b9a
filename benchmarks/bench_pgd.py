"""PGD-k evaluation throughput (images/s): ours against the TeCoA-family loop and torchattacks' PGD.

Per model and class count, on the same model, batch and images: the attack plus the forward pass that scores the
attacked images (what robust accuracy costs), for
- ours, fast path: ``predict_logits(..., fast=True)`` (cached class embeddings, input-only gradients, fused layers);
- ours, default path: ``predict_logits(...)`` (cached class embeddings, input-only gradients);
- torchattacks: ``torchattacks.PGD`` around our zero-shot head (``nbhelpers.attacks.torchattacks_pgd``), then a
  ``no_grad`` forward;
- TeCoA family: :class:`benchmarks.tecoa_loop.TecoaFamily.evaluate` (text re-encoded and weight gradients at
  every step). With ``peer_steps`` < steps, its attack is timed with peer_steps steps and scaled per step, plus a
  separately timed final forward (said in the table's note).

Achieved FLOP/s of our fast path = (steps x FLOPs of forward + input gradient + FLOPs of the final forward) /
wall time, counted on the image encoder and head by FlopCounterMode, as a fraction of the measured matmul rate.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from benchmarks import common
from benchmarks.tecoa_loop import TecoaFamily
from nbhelpers.attacks import torchattacks_pgd
from nbhelpers.metrics import predict_logits

TARGET_VS_TECOA = {10: 2.0, 200: 5.0}  # issue 5: CPU targets by class count
TARGET_VS_TORCHATTACKS = 1.0
TARGET_FLOP_FRACTION = {"vit-b-32": 0.5}


@dataclass(frozen=True)
class PgdSettings:
    """Attack settings (eps and alpha in pixel units) and measurement settings of the PGD benchmark."""

    steps: int = 10
    eps: float = 4 / 255
    alpha: float = 1 / 255
    peer_steps: int | None = None
    repeats: int = 3
    budget_s: float = 10.0
    seed: int = 0


def bench_pgd(model_name: str, classes: list[int], *, batch_size: int, device: torch.device,
              settings: PgdSettings = PgdSettings()) -> common.Section:
    """Time the four PGD evaluations on one model at each class count; rows, ratios (PASS/MISS) and notes."""
    s = settings
    common.seed_everything(s.seed)
    model, note = common.load_model(model_name, device=device)
    section = common.Section(f"PGD-{s.steps} evaluation, {note}, batch {batch_size}, {device.type}")
    rate = common.matmul_rate(device=device)
    section.notes.append(f"measured fp32 2048x2048 matmul rate: {rate / 1e9:.1f} GFLOP/s")
    peer_model = copy.deepcopy(model)  # their loop makes every parameter require grad; keep ours frozen
    peers = TecoaFamily(peer_model.clip, peer_model.tokenize, image_size=model.image_size, mean=model.mean,
                        std=model.std, device=device, amp=device.type == "cuda")
    for c in common.progress(classes, desc=f"PGD {model_name}"):
        head, texts = common.zero_shot_head(model, c, device=device)
        x, y = common.batch(model, batch_size, c, seed=s.seed, device=device)
        amp = device.type == "cuda"

        def ours(fast: bool, steps: int = s.steps) -> torch.Tensor:
            return predict_logits(head, x, y, eps=s.eps, alpha=s.alpha, steps=steps, batch_size=batch_size,
                                  device=device, seed=s.seed, fast=fast, amp=amp and fast)

        def torchattacks(steps: int = s.steps) -> torch.Tensor:
            adv = torchattacks_pgd(head, x, y, eps=s.eps, alpha=s.alpha, steps=steps, seed=s.seed)
            with torch.no_grad():
                return head(adv)

        def tecoa(steps: int = s.steps) -> torch.Tensor:
            return peers.evaluate(x, y, texts, eps=s.eps, alpha=s.alpha, steps=steps)

        kw = dict(device=device, repeats=s.repeats, budget_s=s.budget_s)
        t_fast = common.time_call(lambda: ours(True), warmup=lambda: ours(True, 1), **kw)
        t_default = common.time_call(lambda: ours(False), warmup=lambda: ours(False, 1), **kw)
        t_ta = common.time_call(torchattacks, warmup=lambda: torchattacks(1), **kw)
        if s.peer_steps is None or s.peer_steps >= s.steps:
            t_peer = common.time_call(tecoa, warmup=lambda: peers.evaluate(x, y % 10, texts[:10], eps=s.eps,
                                                                           alpha=s.alpha, steps=1), **kw)
        else:
            t_peer = _scaled_peer_time(peers, x, y, texts, s, device=device)
        fwd, fwd_bwd = common.attack_step_flops(head, x, y)
        flops = s.steps * fwd_bwd + fwd
        achieved = flops / t_fast.median
        for name, t in (("ours (fast path)", t_fast), ("ours (default path)", t_default),
                        ("torchattacks PGD", t_ta), ("TeCoA-family loop", t_peer)):
            section.rows.append({"model": model_name, "classes": c, "method": name, "median_s": t.median,
                                 "images_per_s": batch_size / t.median, "repeats": len(t.times),
                                 "note": t.note})
        section.rows.append({"model": model_name, "classes": c, "method": "ours (fast path): FLOP/s",
                             "median_s": t_fast.median, "images_per_s": batch_size / t_fast.median,
                             "repeats": len(t_fast.times),
                             "note": f"{flops / 1e9:.1f} GFLOP/batch, {achieved / 1e9:.1f} GFLOP/s = "
                                     f"{achieved / rate:.0%} of matmul rate"})
        tag = f"PGD-{s.steps} eval, {model_name}, {c} classes"
        section.ratios.append(common.Ratio(f"{tag}: ours / TeCoA-family loop", t_peer.median / t_fast.median,
                                           TARGET_VS_TECOA.get(c), t_peer.note))
        section.ratios.append(common.Ratio(f"{tag}: ours / torchattacks PGD", t_ta.median / t_fast.median,
                                           TARGET_VS_TORCHATTACKS))
        section.ratios.append(common.Ratio(f"{tag}: fast path / default path (ours)", t_default.median / t_fast.median))
        section.ratios.append(common.Ratio(f"{tag}: achieved FLOP/s / matmul rate", achieved / rate,
                                           TARGET_FLOP_FRACTION.get(model_name),
                                           "forward + input-gradient FLOPs of the image encoder"))
    return section


def _scaled_peer_time(peers: TecoaFamily, x: torch.Tensor, y: torch.Tensor, texts: list[str], s: PgdSettings, *,
                      device: torch.device) -> common.Timing:
    """TeCoA-family evaluation time for s.steps, from its attack timed at s.peer_steps steps plus its final forward."""
    from benchmarks.tecoa_loop import attack_pgd, multi_gpu_clip

    tokens = peers.tokenize(texts).to(device)

    def attack(k: int) -> None:
        attack_pgd(peers.clip, x, y, tokens, alpha=s.alpha, attack_iters=k, epsilon=s.eps, size=peers.size,
                   mean=peers.mean, std=peers.std)

    def final() -> None:
        with torch.no_grad():
            multi_gpu_clip(peers.clip, peers._pre(x), peers.tokenize(texts).to(device))

    peers.clip.eval()
    t_attack = common.time_call(lambda: attack(s.peer_steps), warmup=lambda: attack(1), device=device,
                                repeats=s.repeats, budget_s=s.budget_s)
    t_final = common.time_call(final, device=device, repeats=s.repeats, budget_s=s.budget_s)
    total = t_attack.median * s.steps / s.peer_steps + t_final.median
    return common.Timing([total], note=f"scaled: attack timed at PGD-{s.peer_steps}, x {s.steps / s.peer_steps:g}")
