"""One adversarial fine-tuning step (TeCoA and TIMA objectives): our engine against the TeCoA-family step.

Ours: :func:`nbhelpers.training.train_step` on an engine set up as :func:`nbhelpers.training.finetune` does
(student copy with only the image tower trainable, frozen teacher for TIMA, SGD momentum, fixed class
embeddings): PGD-2 at train eps with input-only gradients, the objective, backward, SGD step. Also timed with
the attack's fast path (``Engine.fast_attack``), which ``finetune`` does not use.

Theirs: :meth:`benchmarks.tecoa_loop.TecoaFamily.train_step`: the same PGD-2 with text re-encoded and weight
gradients at each attack step, a training forward that re-encodes the text with gradients, mean cross-entropy
(TeCoA) or, for TIMA, the same TAI objective as ours (margin cross-entropy + text-aware distillation) on their
logits, with a ``no_grad`` teacher forward on the clean images in PMG-AFT's style.
"""
from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F

from benchmarks import common
from benchmarks.tecoa_loop import TecoaFamily
from nbhelpers import losses, methods, training
from nbhelpers.models import ClipModel
from nbhelpers.zeroshot import ZeroShotClassifier

OBJECTIVES = {"tecoa": "TeCoA", "tai": "TIMA (TAI)"}
TARGET_VS_TECOA = {10: 2.0, 200: 5.0}


def _engine(model, emb: torch.Tensor, cfg: training.FinetuneConfig, *, device: torch.device) -> training.Engine:
    """Our engine, set up as finetune does (student copy, teacher for TIMA, SGD over the image tower)."""
    student = copy.deepcopy(model).eval()
    for name, p in student.named_parameters():
        p.requires_grad_(name.startswith("clip.visual."))
    teacher = ZeroShotClassifier(model, emb).to(device).eval() if methods.get(cfg.method).needs_teacher else None
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.finetune_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return training.make_engine(cfg, student, emb, opt, teacher=teacher, scale=model.logit_scale(), device=device)


def _time_objective(model: ClipModel, emb: torch.Tensor, texts: list[str], x: torch.Tensor, y: torch.Tensor,
                    noise: torch.Tensor, cfg: training.FinetuneConfig, *, device: torch.device, repeats: int,
                    budget_s: float) -> tuple[common.Timing, common.Timing, common.Timing]:
    """(ours, ours with fast attack, theirs) timings of one step with cfg.method on images x (N, 3, S, S), labels y."""
    amp = device.type == "cuda"
    eps, alpha, steps = cfg.train_eps / 255, cfg.train_alpha / 255, cfg.train_pgd_steps
    engine = _engine(model, emb, cfg, device=device)
    fast_engine = dataclasses.replace(engine, fast_attack=True)
    step = cfg.warmup_steps
    peer_model = copy.deepcopy(model)
    peers = TecoaFamily(peer_model.clip, peer_model.tokenize, image_size=model.image_size, mean=model.mean,
                        std=model.std, device=device, amp=amp)
    peer_opt = torch.optim.SGD(peer_model.clip.visual.parameters(), lr=cfg.finetune_lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    teacher = copy.deepcopy(model.clip).eval() if cfg.method == "tai" else None

    def tai_objective(adv_logits: torch.Tensor, clean_teacher: torch.Tensor) -> torch.Tensor:
        """Our TAI objective (margin cross-entropy + text-aware distillation) on their logits."""
        margin = losses.margin_logits(adv_logits, y, engine.margins, scale=engine.scale)
        return F.cross_entropy(margin, y) + cfg.takd_weight * losses.text_aware_kd(
            adv_logits, clean_teacher, temperature=cfg.takd_temperature)

    objective = tai_objective if cfg.method == "tai" else None

    def theirs() -> None:
        peers.train_step(peer_opt, x, y, texts, eps=eps, alpha=alpha, steps=steps, objective=objective,
                         teacher=teacher)

    def theirs_warmup() -> None:  # 1 attack step on 10 prompts: warms the code paths, cheap at 200 classes
        peers.train_step(peer_opt, x, y % 10, texts[:10], eps=eps, alpha=alpha, steps=1)

    kw = dict(device=device, repeats=repeats, budget_s=budget_s)
    t_ours = common.time_call(lambda: training.train_step(engine, step, x, y, noise), **kw)
    t_fast = common.time_call(lambda: training.train_step(fast_engine, step, x, y, noise), **kw)
    t_peer = common.time_call(theirs, warmup=theirs_warmup, **kw)
    return t_ours, t_fast, t_peer


def bench_train_step(model_name: str, classes: list[int], *, batch_size: int, device: torch.device,
                     repeats: int = 3, budget_s: float = 10.0, seed: int = 0) -> common.Section:
    """Time one fine-tuning step per objective and class count, ours and theirs; rows, ratios and notes."""
    common.seed_everything(seed)
    model, note = common.load_model(model_name, device=device)
    base_cfg = training.FinetuneConfig.from_params(amp=device.type == "cuda")
    section = common.Section(f"one fine-tuning step (PGD-{base_cfg.train_pgd_steps} at train eps "
                             f"{base_cfg.train_eps:g}/255 + objective + SGD), {note}, batch {batch_size}, "
                             f"{device.type}")
    for c in common.progress(classes, desc=f"train step {model_name}"):
        head, texts = common.zero_shot_head(model, c, device=device)
        x, y = common.batch(model, batch_size, c, seed=seed, device=device)
        noise = (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) - 1).to(device)
        for method, label in OBJECTIVES.items():
            cfg = dataclasses.replace(base_cfg, method=method)
            timings = _time_objective(model, head.class_embeddings, texts, x, y, noise, cfg, device=device,
                                      repeats=repeats, budget_s=budget_s)
            for name, t in zip(("ours (engine)", "ours (engine, fast attack)", "TeCoA-family step"), timings):
                section.rows.append({"model": model_name, "classes": c, "objective": label, "method": name,
                                     "median_s": t.median, "images_per_s": batch_size / t.median,
                                     "repeats": len(t.times)})
            t_ours, _, t_peer = timings
            section.ratios.append(common.Ratio(
                f"train step {label}, {model_name}, {c} classes: ours / TeCoA-family step",
                t_peer.median / t_ours.median, TARGET_VS_TECOA.get(c)))
    return section
