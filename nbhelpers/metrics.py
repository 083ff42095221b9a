"""Clean and robust accuracy, per-sample logit margins and per-class-pair margins.

Logits are (N, C) float tensors, labels (N,) int64. The logit margin of a sample is its true-class logit minus
the best other logit: positive means correctly classified, and its size is how far the sample is from the
decision boundary in logit units (TIMA's findings 1 and 2 are about this quantity under attack).
"""
from __future__ import annotations

import contextlib

import pandas as pd
import torch
from torch import nn

from nbhelpers.attacks import LossName, frozen, pgd_attack
from nbhelpers.fastpath import fast_forward, wants_channels_last
from nbhelpers.utils import progress_bar


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy as a fraction in [0, 1]."""
    return float((logits.argmax(1) == labels).float().mean())


def logit_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample margin (N,): true logit minus the best other logit."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return true - other


def pair_margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(C, C) matrix: entry (i, j) is the mean of z_i - z_j over samples of class i; NaN on the diagonal/empty rows."""
    c = logits.shape[1]
    true = logits.gather(1, labels[:, None])
    diffs = true - logits  # (N, C): z_y - z_j
    sums = torch.zeros(c, c, dtype=diffs.dtype).index_add_(0, labels, diffs)
    counts = torch.bincount(labels, minlength=c).to(diffs.dtype)
    out = sums / counts[:, None]
    out[counts == 0] = float("nan")
    out.fill_diagonal_(float("nan"))
    return out


def predict_logits(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float = 0.0,
                   steps: int = 10, alpha: float | None = None, loss: LossName = "ce", batch_size: int = 256,
                   device: torch.device | str = "cpu", seed: int = 0, progress: bool = False,
                   desc: str = "attack", fast: bool = False, amp: bool = False) -> torch.Tensor:
    """Logits (N, C) on CPU of the classifier on images attacked with PGD at eps (pixel units; 0 = clean).

    fast / amp: as in :func:`~nbhelpers.attacks.pgd_attack`, for the attack and the final forward pass
    (amp = bf16 autocast, meant for GPUs; logits are returned in fp32).
    """
    out = []
    gen = torch.Generator().manual_seed(seed)
    starts = range(0, len(images), batch_size)
    channels_last = fast and wants_channels_last(classifier)
    for i in progress_bar(starts, desc=desc, disable=not progress, leave=False):
        x = images[i:i + batch_size].to(device)
        y = labels[i:i + batch_size].to(device)
        if eps > 0:
            x = pgd_attack(classifier, x, y, eps=eps, alpha=alpha, steps=steps, loss=loss, generator=gen,
                           fast=fast, amp=amp)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            stack.enter_context(torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp))
            if fast:  # frozen, so that eval-mode BatchNorms fold into their convolutions
                stack.enter_context(frozen(classifier))
                stack.enter_context(fast_forward(classifier))
            out.append(classifier(x).float().cpu())
    return torch.cat(out)


def margin_sweep(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps_list: list[float],
                 steps: int = 10, alpha: float | None = None, loss: LossName = "ce", batch_size: int = 256,
                 device: torch.device | str = "cpu", seed: int = 0,
                 progress: bool = False) -> tuple[pd.DataFrame, dict[float, torch.Tensor]]:
    """Attack at each eps (in 1/255 units; 0 = clean): long table (sample, eps, label, margin, correct) + logits per eps."""
    rows, logits_by_eps = [], {}
    for e in progress_bar(eps_list, desc="eps sweep", disable=not progress):
        logits = predict_logits(classifier, images, labels, eps=e / 255, steps=steps, alpha=alpha, loss=loss,
                                batch_size=batch_size, device=device, seed=seed, desc=f"PGD-{steps} eps {e}/255")
        logits_by_eps[e] = logits
        m = logit_margin(logits, labels)
        rows.append(pd.DataFrame({"sample": range(len(labels)), "eps": e, "label": labels.numpy(),
                                  "margin": m.numpy(), "correct": (m > 0).numpy()}))
    return pd.concat(rows, ignore_index=True), logits_by_eps


def check_mini_targets(grid: pd.DataFrame, *, clean_factor: float = 3.0, eps_half: float = 4.0) -> pd.DataFrame:
    """Per task: clean >= clean_factor x chance; PGD at eps_half removes >= half of clean; accuracy falls with eps."""
    rows = []
    for task, g in grid.groupby("task", sort=False):
        acc = g.set_index("eps")["accuracy"].sort_index()
        clean, chance = acc.loc[0.0], g["chance"].iloc[0]
        robust = acc.loc[eps_half]
        attacked = acc[acc.index > 0]
        rows.append({"task": task, "clean": clean, "chance": chance, "clean_over_chance": clean / chance,
                     f"robust_eps{eps_half:g}": robust, "removed_fraction": 1 - robust / clean,
                     "clean_ok": clean >= clean_factor * chance, "fragile_ok": robust <= clean / 2,
                     "monotone_ok": bool((attacked.diff().dropna() <= 0).all())})
    return pd.DataFrame(rows)
