"""Shared pieces of the benchmarks: models and data, class prompts, timing, FLOP counting, matmul rate, tables.

Times are wall-clock seconds (``time.perf_counter``, with ``torch.cuda.synchronize`` on GPUs), FLOPs are counted
by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add is 2 FLOPs; matmuls and convolutions only).
"""
from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from nbhelpers.models import ClipModel
    from nbhelpers.zeroshot import ZeroShotClassifier

T = TypeVar("T")
TEMPLATE = "This is a photo of a {}"  # the TeCoA / PMG-AFT template
MODELS = ("mini", "vit-b-32")


def seed_everything(seed: int = 0) -> None:
    """Seed Python's, torch's (CPU and CUDA) random generators."""
    random.seed(seed)
    torch.manual_seed(seed)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU), so that wall time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def classnames(n: int) -> list[str]:
    """n distinct class names (ImageNet's, from open_clip), n <= 1000."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    names = list(dict.fromkeys(IMAGENET_CLASSNAMES))
    if not 1 <= n <= len(names):
        raise ValueError(f"classes must be in [1, {len(names)}], got {n}")
    return names[:n]


def load_model(name: str, *, device: torch.device) -> tuple[ClipModel, str]:
    """(ClipModel in eval mode, frozen, on device; description): 'mini' = the committed mini CLIP (random weights
    if the checkpoint is absent), 'vit-b-32' = open_clip ViT-B/32 with random weights."""
    from nbhelpers import models

    if name == "mini":
        try:
            model, _ = models.create_model_and_transforms("mini", device=device)
            note = "mini CLIP, committed checkpoint"
        except FileNotFoundError:
            model, note = models.build_mini_clip(seed=0).to(device).eval(), "mini CLIP, random weights"
    elif name == "vit-b-32":  # QuickGELU as OpenAI's weights (every peer's), which cost more than GELU eagerly
        model, _, _ = models.timing_model("paper", pretrained="openai", device=device)
        note = "open_clip ViT-B-32, random weights, QuickGELU (as OpenAI's)"
    else:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    for p in model.parameters():
        p.requires_grad_(False)
    return model, note


def batch(model: ClipModel, n: int, classes: int, *, seed: int,
          device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images (n, 3, S, S) in [0, 1] at the model's size and labels (n,) in [0, classes), seeded."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, model.image_size, model.image_size, generator=g)
    y = torch.randint(classes, (n,), generator=g)
    return x.to(device), y.to(device)


def zero_shot_head(model: ClipModel, classes: int, *,
                   device: torch.device) -> tuple[ZeroShotClassifier, list[str]]:
    """(our ZeroShotClassifier over `classes` ImageNet names with TEMPLATE, their prompts)."""
    from nbhelpers.zeroshot import ZeroShotClassifier, build_class_embeddings  # noqa: F811

    names = classnames(classes)
    emb = build_class_embeddings(model, names, [TEMPLATE], device=device)
    return ZeroShotClassifier(model, emb).to(device).eval(), [TEMPLATE.format(c) for c in names]


@dataclass
class Timing:
    """Wall times (s) of the repeats of one measured call; the median is what tables report."""

    times: list[float]
    note: str = ""

    @property
    def median(self) -> float:
        """Median wall time in seconds."""
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        """Fastest repeat in seconds (the least disturbed one)."""
        return min(self.times)


def time_call(fn: Callable[[], object], *, device: torch.device, repeats: int = 3,
              warmup: Callable[[], object] | None = None, budget_s: float = 60.0) -> Timing:
    """Median-of-repeats wall time of fn() after one warm-up call (warmup() if given, e.g. a 1-step version).

    Repeats stop early (after at least one) once budget_s seconds of timed calls are spent, so slow baselines
    are timed once rather than three times.
    """
    (warmup or fn)()
    sync(device)
    times: list[float] = []
    while len(times) < repeats and (not times or sum(times) < budget_s):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return Timing(times)


def matmul_rate(*, device: torch.device, n: int = 2048, repeats: int = 7,
                dtype: torch.dtype = torch.float32) -> float:
    """This machine's measured rate (FLOP/s) of an n x n by n x n matmul, median of repeats after warm-up."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g, dtype=torch.float32).to(device, dtype)
    b = torch.randn(n, n, generator=g, dtype=torch.float32).to(device, dtype)
    timing = time_call(lambda: a @ b, device=device, repeats=repeats, budget_s=30.0)
    return 2 * n ** 3 / timing.median


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the aten matmul/convolution ops that fn() runs (forward and any backward it triggers)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def attack_step_flops(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(forward, forward + input-gradient) FLOPs of one PGD step of classifier on images (N, 3, S, S).

    Parameters are frozen, so loss.backward() on the leaf input computes input gradients only (FlopCounterMode
    cannot follow torch.autograd.grad w.r.t. a leaf, which is what the attack itself calls).
    """
    flags = [(p, p.requires_grad) for p in classifier.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            fwd = count_flops(lambda: classifier(images))

        def fwd_bwd() -> None:
            x = images.detach().clone().requires_grad_(True)
            F.cross_entropy(classifier(x).float(), labels, reduction="sum").backward()

        both = count_flops(fwd_bwd)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return fwd, both


@dataclass
class Ratio:
    """A ratio (speed: theirs' time / ours, > 1 = ours faster; or a fraction) against its target (None: no target)."""

    name: str
    value: float
    target: float | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        """'PASS' / 'MISS' against the target, 'info' without one."""
        if self.target is None:
            return "info"
        return "PASS" if self.value >= self.target else "MISS"


@dataclass
class Section:
    """A benchmark's result: a table (list of row dicts), its ratios, and notes."""

    title: str
    rows: list[dict] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def format_table(rows: list[dict], *, markdown: bool = False) -> str:
    """Rows (dicts with the same keys) as an aligned text table, or a markdown table."""
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    cells = [[_fmt(r.get(k, "")) for k in keys] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = "  ".join(k.rjust(w) for k, w in zip(keys, widths))
    return "\n".join([line, "-" * len(line)] + ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells])


def progress(iterable: Iterable[T], *, desc: str) -> Iterable[T]:
    """tqdm progress bar on stderr; silent under TQDM_DISABLE=1."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, disable=os.environ.get("TQDM_DISABLE", "") not in ("", "0"), leave=False)
