"""LAAT in its own setting: a small image backbone trained from scratch, adversarially, against frozen text anchors.

LAAT (Li et al., "Language-Driven Anchors for Zero-Shot Adversarial Robustness", CVPR 2024, arXiv 2301.13096)
does not fine-tune CLIP. It encodes the class names of the training set with CLIP's frozen text tower (the
*anchors*), trains an image backbone from scratch with a cosine head against them, adversarially, and then
classifies unseen classes zero-shot by encoding their names with the same text tower. Its two claims tested in
notebook 07: (1) *expanding* the anchors (rotate their centre to a pole, spread their angles: ``losses.laat_expand``)
and (2) *relaxing* the cosine objective with cross-entropy each improve zero-shot robustness on unseen classes.

What is the paper's and what is ours (each "ours" is a parameter of :class:`LAATRun` / ``LAATConfig``):

- paper: frozen text anchors from the CLIP text tower; the image backbone trained from scratch with a cosine head;
  the anchor objective "cos θ" (pull the image embedding of the adversarial image to its class anchor:
  :func:`anchor_cosine_loss`); the relaxation that adds cross-entropy over the cosine logits alongside it
  (:func:`anchor_ce_loss`; "cos θ + CE" in the paper's ablation); adversarial training with PGD; the expansion's
  geometry (centre rotated to the pole, angles spread).
- ours: the backbone (a small ConvNet, :class:`SmallConvNet`, for 32 px images; the paper trains larger backbones on
  CIFAR- and ImageNet-scale data); the CE weight (1) and the scale of the CE relaxation's cosine logits (5; at the
  mini CLIP's temperature, about 24, the expanded arm with CE did not learn its training task even without attack,
  and the paper's value is not in our text); the logit scale of the head that attacks and evaluation use (the mini
  CLIP's); the spread factor of the expansion and applying it to every label space (training and each test task)
  with that space's own centre; the training attack (PGD maximising CE over the scaled cosine logits of the head in
  force, the same for all four arms), its steps and step size; the training radius (4/255 by default, LAAT's being
  8/255: see notebook 07's radius check) and its linear ramp from 0 over the first half of training; the schedule
  (SGD, momentum 0.9, cosine decay); the training images (a first-N prefix of the mini world's training split of the
  fine-tuning task, shared by all seeds; a training seed sets initialisation, data order and attack noise). The
  paper's smoothness term (its "SP") is not implemented: the 2x2 design varies expansion and CE only, as the paper's
  claims do.

The backbone replaces only the image tower: :class:`AnchorImageModel` exposes what
:func:`nbhelpers.zeroshot.build_head` and :func:`nbhelpers.evaluation.evaluate` use (``encode_image``,
``logit_scale()``, ``clip.visual``), so the evaluation, attacks and text side are the project's ordinary ones.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers import findings, losses, world
from nbhelpers.attacks import pgd_attack
from nbhelpers.config import LAATConfig
from nbhelpers.evaluation import EmbeddingFn, EvalModel, text_embedder
from nbhelpers.findings import Finding, Interval
from nbhelpers.models import OPENAI_MEAN, OPENAI_STD, ClipModel
from nbhelpers.utils import progress_bar
from nbhelpers.zeroshot import build_class_embeddings, build_head

# bump with any change to the numbers this module computes (see utils.numerics_versions)
NUMERICS_VERSION = 1

ARMS: dict[str, tuple[bool, bool]] = {  # name -> (expand the anchors, add the CE relaxation)
    "cos": (False, False),
    "cos + CE": (False, True),
    "expanded cos": (True, False),
    "expanded cos + CE": (True, True),
}


# ------------------------------------------------------------------------------------------------ the backbone
def _conv(c_in: int, c_out: int, *, stride: int) -> nn.Sequential:
    """3x3 convolution (no bias), BatchNorm, ReLU: (N, c_in, H, W) -> (N, c_out, H/stride, W/stride)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU())


class SmallConvNet(nn.Module):
    """ours: a small ConvNet trained from scratch, images in [0, 1] (N, 3, 32, 32) -> embeddings (N, embed_dim).

    CLIP's mean/std normalisation inside; four 3x3 conv-BN-ReLU layers of widths (w, 2w, 2w, 4w) at strides
    (2, 2, 1, 2) (32 -> 16 -> 8 -> 8 -> 4 px), global average pooling, a linear map to the text anchors' dimension.
    Sized for CPU budgets (width 16: about 41k parameters); the paper trains larger backbones.
    """

    def __init__(self, *, embed_dim: int, width: int = 16, seed: int = 0,
                 mean: tuple[float, ...] = OPENAI_MEAN, std: tuple[float, ...] = OPENAI_STD) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # seeded init that leaves the global RNG as it was
            torch.manual_seed(seed)
            self.features = nn.Sequential(_conv(3, width, stride=2), _conv(width, 2 * width, stride=2),
                                          _conv(2 * width, 2 * width, stride=1), _conv(2 * width, 4 * width, stride=2))
            self.proj = nn.Linear(4 * width, embed_dim)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised embeddings (N, embed_dim) of images (N, 3, S, S) in [0, 1]."""
        x = self.features((images - self.mean) / self.std)
        return self.proj(x.mean(dim=(2, 3)))


class AnchorImageModel(nn.Module):
    """The backbone in the place of CLIP's image tower: the interface the zero-shot head and the evaluation use
    (encode_image -> unit embeddings (N, D), logit_scale(), clip.visual for fingerprints)."""

    def __init__(self, backbone: nn.Module, *, logit_scale: float, model_name: str = "laat-convnet") -> None:
        super().__init__()
        self.clip = nn.ModuleDict({"visual": backbone})
        self.scale = float(logit_scale)
        self.model_name = model_name

    @property
    def visual(self) -> nn.Module:
        """The trained backbone."""
        return self.clip["visual"]

    def logit_scale(self) -> float:
        """The multiplier of the cosine logits (a plain float)."""
        return self.scale

    def encode_image(self, images: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Embeddings (N, D) of images (N, 3, S, S) in [0, 1]; unit-norm when normalize."""
        out = self.visual(images)
        return F.normalize(out, dim=-1) if normalize else out


# ------------------------------------------------------------------------------------------------ objectives
def anchor_cosines(features: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (N, C) of image features (N, D) (any norm) with class anchors (C, D) (any norm)."""
    return F.normalize(features, dim=-1) @ F.normalize(anchors, dim=-1).T


def anchor_cosine_loss(features: torch.Tensor, anchors: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """paper (LAAT's "cos θ" objective): mean over samples of 1 - cos(f(x), a_y); features (N, D), anchors (C, D),
    labels (N,). Pulls each embedding to its own anchor only; the other anchors do not enter."""
    return (1 - anchor_cosines(features, anchors).gather(1, labels[:, None]).squeeze(1)).mean()


def anchor_ce_loss(features: torch.Tensor, anchors: torch.Tensor, labels: torch.Tensor, *,
                   scale: float) -> torch.Tensor:
    """paper (LAAT's CE relaxation), our scale: cross-entropy of scale x cos(f(x), a_c) over classes c, mean over
    samples; features (N, D), anchors (C, D), labels (N,)."""
    return F.cross_entropy(scale * anchor_cosines(features, anchors), labels)


def laat_objective(features: torch.Tensor, anchors: torch.Tensor, labels: torch.Tensor, *, relax: bool,
                   scale: float, ce_weight: float = 1.0) -> torch.Tensor:
    """LAAT's training loss: the cosine objective, plus (relax) ce_weight x the CE relaxation (paper: added
    alongside the cosine objective; the weight is ours)."""
    loss = anchor_cosine_loss(features, anchors, labels)
    if relax:
        loss = loss + ce_weight * anchor_ce_loss(features, anchors, labels, scale=scale)
    return loss


def anchor_transform(expand: bool, *, spread: float) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The anchors' transform of an arm: losses.laat_expand at spread (C, D) -> (C, D), or None (as encoded)."""
    return (lambda emb: losses.laat_expand(emb, spread=spread)) if expand else None


# ------------------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class LAATRun:
    """One training run: the arm (expand, relax), the training seed, and every knob of the recipe.

    train_eps in 1/255 units; alpha: the PGD step as a multiple of the current radius; eps_ramp: the fraction of
    the steps over which the radius grows linearly from 0 to train_eps (ours: a from-scratch curriculum); lr: peak
    SGD learning rate (linear warm-up over warmup_steps, then cosine decay to 0).
    """

    expand: bool
    relax: bool
    seed: int = 0
    steps: int = 400
    lr: float = 0.1
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 10
    width: int = 16
    train_eps: float = 4.0
    pgd_steps: int = 2
    alpha: float = 1.25
    eps_ramp: float = 0.5
    spread: float = 1.5
    ce_weight: float = 1.0
    ce_scale: float = 5.0

    @property
    def arm(self) -> str:
        """The arm's name in :data:`ARMS`."""
        return {v: k for k, v in ARMS.items()}[(self.expand, self.relax)]


@dataclass
class LAATResult:
    """A trained backbone (as an AnchorImageModel, eval mode), its loss history (one row per step) and seconds."""

    run: LAATRun
    model: AnchorImageModel
    history: pd.DataFrame
    seconds: float
    anchors: torch.Tensor = field(repr=False, default_factory=lambda: torch.empty(0))


def lr_at(step: int, *, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `steps` (learning rate of step, 0-based)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def training_anchors(text_model: ClipModel, classnames: list[str], templates: list[str], *, expand: bool,
                     spread: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """The frozen training anchors (C, D), unit norm: the text tower's class embeddings, expanded or not."""
    emb = build_class_embeddings(text_model, classnames, templates, device=device)
    transform = anchor_transform(expand, spread=spread)
    return (transform(emb) if transform is not None else emb).detach()


def train_laat(run: LAATRun, *, images: torch.Tensor, labels: torch.Tensor, anchors: torch.Tensor,
               logit_scale: float, device: torch.device | str = "cpu", progress: bool = False) -> LAATResult:
    """Adversarial training of a fresh backbone against fixed anchors (C, D) on images (N, 3, S, S) in [0, 1].

    Each step: a batch (seeded order per epoch), PGD at the step's radius (run.train_eps after the ramp; input-only
    gradients, the backbone frozen, CE over logit_scale x cosine logits: the head every arm is evaluated with), then
    the LAAT objective on the adversarial images (its CE relaxation at run.ce_scale); SGD. Deterministic on
    CPU for a given run. Only the backbone's parameters are updated; anchors are a detached buffer of the head.
    """
    anchors = anchors.detach().to(device)
    backbone = SmallConvNet(embed_dim=anchors.shape[1], width=run.width,
                           seed=world.derive_seed(run.seed, "laat-init")).to(device)
    model = AnchorImageModel(backbone, logit_scale=logit_scale)
    head = build_head(model, anchors, device=device)  # logits = scale * cos; anchors a buffer, never trained
    head.train()  # pgd_attack runs the head in eval mode and restores this mode: BatchNorm trains in train mode
    opt = torch.optim.SGD(backbone.parameters(), lr=run.lr, momentum=run.momentum, weight_decay=run.weight_decay)
    noise = torch.Generator().manual_seed(world.derive_seed(run.seed, "laat-attack"))
    n = len(labels)
    per_epoch = n // run.batch_size
    rows = []
    t0 = time.time()
    for step in progress_bar(range(run.steps), desc=f"LAAT {run.arm} seed {run.seed}", disable=not progress, leave=False):
        epoch, k = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(world.derive_seed(run.seed, "laat-order",
                                                                                              epoch)))
        idx = order[k * run.batch_size:(k + 1) * run.batch_size]
        x, y = images[idx].to(device), labels[idx].to(device)
        eps = run.train_eps * min(1.0, (step + 1) / max(1.0, run.eps_ramp * run.steps))
        adv = pgd_attack(head, x, y, eps=eps / 255, alpha=run.alpha * eps / 255, steps=run.pgd_steps,
                         generator=noise)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps=run.steps, lr=run.lr, warmup=run.warmup_steps)
        features = backbone(adv)
        loss = laat_objective(features, anchors, y, relax=run.relax, scale=run.ce_scale, ce_weight=run.ce_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            cos = anchor_cosines(features, anchors)
            rows.append({"step": step, "eps": eps, "loss": float(loss),
                         "adv_accuracy": float((cos.argmax(1) == y).float().mean()),
                         "cos_to_anchor": float(cos.gather(1, y[:, None]).mean())})
    head.eval()
    return LAATResult(run, model, pd.DataFrame(rows), time.time() - t0, anchors.cpu())


def run_for(cfg: LAATConfig, *, expand: bool, relax: bool, seed: int, train_eps: float | None = None) -> LAATRun:
    """The LAATRun of one arm and training seed under a notebook config (train_eps overrides cfg.laat_eps)."""
    return LAATRun(expand=expand, relax=relax, seed=seed, steps=cfg.laat_steps, lr=cfg.laat_lr,
                   batch_size=cfg.laat_batch_size, width=cfg.laat_width,
                   train_eps=cfg.laat_eps if train_eps is None else float(train_eps), pgd_steps=cfg.laat_pgd_steps,
                   alpha=cfg.laat_alpha, eps_ramp=cfg.eps_ramp, spread=cfg.spread, ce_weight=cfg.ce_weight,
                   ce_scale=cfg.ce_scale)


def training_set(cfg: LAATConfig) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """The fine-tuning task's first cfg.train_images training images (N, 3, 32, 32) in [0, 1], labels (N,), its
    class names and the prompt templates (the world's pool of seed 0, shared by every training seed)."""
    images, labels = world.generate_task(world.FINETUNE_TASK, cfg.train_images, split="train", seed=0)
    return images, labels, world.TASKS[world.FINETUNE_TASK].classnames(), [world.PROMPT_TEMPLATE]


def train_runs(runs: Sequence[LAATRun], text_model: ClipModel, data: tuple, *, label_eps: bool = False,
               device: torch.device | str = "cpu", progress: bool = False) -> dict[str, LAATResult]:
    """Train every run on data (:func:`training_set`) against its anchors; keyed 'arm | seed s' (with
    ' @ eps/255' appended when label_eps)."""
    images, labels, classnames, templates = data
    out = {}
    for run in progress_bar(runs, desc="backbones", disable=not progress):
        anchors = training_anchors(text_model, classnames, templates, expand=run.expand, spread=run.spread,
                                   device=device)
        key = f"{run.arm} | seed {run.seed}" + (f" @ {run.train_eps:g}/255" if label_eps else "")
        out[key] = train_laat(run, images=images, labels=labels, anchors=anchors,
                              logit_scale=text_model.logit_scale(), device=device)
    return out


def training_summary(results: dict[str, LAATResult], *, last: int = 20) -> pd.DataFrame:
    """Per trained backbone: arm, seed, radius, seconds and the mean of the last `last` steps' loss, adversarial
    training accuracy and cosine to the own anchor."""
    rows = []
    for key, r in results.items():
        tail = r.history.tail(last)
        rows.append({"model": key, "arm": r.run.arm, "train_seed": r.run.seed, "train_eps": r.run.train_eps,
                     "seconds": round(r.seconds, 1), "loss": tail.loss.mean(),
                     "adv_accuracy": tail.adv_accuracy.mean(), "cos_to_anchor": tail.cos_to_anchor.mean()})
    return pd.DataFrame(rows)


def anchor_geometry(text_model: ClipModel, classnames: list[str], templates: list[str], *, spread: float,
                    device: torch.device | str = "cpu") -> pd.DataFrame:
    """Original vs expanded anchors (C, D) of one label space: count, dimension, mean and max pairwise cosine,
    cosine of each anchor to the original centre (mean), and the norm of the mean anchor (1: all alike)."""
    rows = []
    original = training_anchors(text_model, classnames, templates, expand=False, spread=spread, device=device)
    centre = F.normalize(original.mean(0), dim=0)
    for name, expand in (("original", False), ("expanded", True)):
        a = training_anchors(text_model, classnames, templates, expand=expand, spread=spread, device=device)
        cos = losses.pairwise_cosine(a)
        off = ~torch.eye(len(a), dtype=torch.bool, device=a.device)
        rows.append({"anchors": name, "classes": a.shape[0], "dim": a.shape[1],
                     "mean_pair_cos": float(cos[off].mean()), "max_pair_cos": float(cos[off].max()),
                     "cos_to_original_centre": float((a @ centre).mean()), "mean_norm": float(a.mean(0).norm())})
    return pd.DataFrame(rows).set_index("anchors")


# ------------------------------------------------------------------------------------------------ evaluation
def eval_model(result: LAATResult, text_model: ClipModel, *, name: str,
               device: torch.device | str = "cpu") -> EvalModel:
    """The trained backbone paired with the frozen text tower (expanded per label space in the expanded arms)."""
    run = result.run
    embed: EmbeddingFn = text_embedder(text_model, transform=anchor_transform(run.expand, spread=run.spread),
                                       device=device)
    return EvalModel(name, name, result.model, embed, "expanded" if run.expand else "original", run=run,
                     tags={"arm": run.arm, "expand": str(run.expand), "relax": str(run.relax),
                           "train_seed": str(run.seed), "train_eps": f"{run.train_eps:g}"})


def eval_models(results: dict[str, LAATResult], text_model: ClipModel, *,
                device: torch.device | str = "cpu") -> dict[str, EvalModel]:
    """:func:`eval_model` of every trained backbone, keyed and named as results."""
    return {key: eval_model(r, text_model, name=key, device=device) for key, r in results.items()}


# ------------------------------------------------------------------------------------------------ findings
CLAIMS = {
    "07_expansion": ("expand", "LAAT claim 1: expanding the text anchors improves zero-shot robustness on unseen "
                               "classes."),
    "07_relaxation": ("relax", "LAAT claim 2: relaxing the cosine objective with cross-entropy improves zero-shot "
                               "robustness on unseen classes."),
}


def seed_table(rows: pd.DataFrame, *, attack: str, eps: float) -> pd.DataFrame:
    """Mean accuracy over the evaluated tasks per (arm, train_seed), clean and under `attack` at eps:
    columns arm, expand, relax, train_seed, clean, robust (fractions)."""
    tags = ["arm", "expand", "relax", "train_seed"]
    clean = rows[rows.attack == "clean"].groupby(tags).accuracy.mean().rename("clean")
    robust = rows[(rows.attack == attack) & (rows.eps == eps)].groupby(tags).accuracy.mean().rename("robust")
    out = pd.concat([clean, robust], axis=1).reset_index()
    return out.assign(expand=out.expand == "True", relax=out.relax == "True", train_seed=out.train_seed.astype(int))


def factor_effects(table: pd.DataFrame, factor: str) -> pd.DataFrame:
    """Per training seed and level of the other factor, (factor on) - (factor off) of robust and clean accuracy
    (fractions): the paired differences behind a claim. Columns: train_seed, other, robust, clean."""
    other = "relax" if factor == "expand" else "expand"
    on = table[table[factor]].set_index(["train_seed", other])[["robust", "clean"]]
    off = table[~table[factor]].set_index(["train_seed", other])[["robust", "clean"]]
    diff = (on - off).dropna().reset_index().rename(columns={other: "other"})
    return diff.sort_values(["other", "train_seed"]).reset_index(drop=True)


def findings_laat(table: pd.DataFrame, *, attack_label: str, eps: float, figure: str = "figures/07_laat.png",
                  clean_tolerance: float = 0.01) -> list[Finding]:
    """One finding per LAAT claim from the per-seed table (:func:`seed_table`).

    Criterion (ours): with the factor on, mean zero-shot robust accuracy over the test tasks exceeds the arm with it
    off, paired per training seed and at each level of the other factor: the t-interval over seeds of the
    differences at each level is a part, holding above 0 and failing below 0, with findings.RULE over the two
    (findings.judge_ahead, clean accuracy within clean_tolerance of the arm without the factor).
    """
    out = []
    for fid, (factor, claim) in CLAIMS.items():
        diffs = factor_effects(table, factor)
        other = "CE" if factor == "expand" else "expansion"
        ivs: list[Interval] = []
        parts = []
        cleans = []
        for level, part in diffs.groupby("other", sort=True):
            iv, cl = findings.t_interval(part.robust), findings.t_interval(part.clean)
            ivs.append(iv)
            cleans.append(cl)
            parts.append(f"{other} {'on' if level else 'off'}: {findings._ci(iv, 1, 100, True)} "
                         f"(clean {findings._ci(cl, 1, 100, True)})")
        pooled = findings.t_interval(diffs.robust)
        clean_all = findings.t_interval(diffs.clean)
        verdict = findings.judge_ahead(ivs, clean=Interval(clean_all.estimate, clean_all.low,
                                                           clean_all.high), clean_tolerance=clean_tolerance)
        n_seeds = diffs.train_seed.nunique()
        out.append(Finding(
            id=fid, notebook="07", claim=claim,
            criterion=(f"{attack_label} at {eps:g}/255, mean over the zero-shot test tasks: the factor-on minus "
                       f"factor-off accuracy, paired per training seed, has a t-interval over {n_seeds} seeds above "
                       f"0 at both levels of the other factor (clean cost within {clean_tolerance * 100:g} point); each "
                       f"level is a part, failing if its interval lies below 0; {findings.RULE}"),
            paper="improves robust accuracy on unseen classes (LAAT's ablation)",
            ours="on minus off, points: " + "; ".join(parts),
            estimate=pooled.estimate * 100, ci_low=pooled.low * 100, ci_high=pooled.high * 100,
            verdict=verdict, figure=figure,
            detail=(f"pooled over both levels: {findings._ci(pooled, 1, 100, True)} points robust, "
                    f"{findings._ci(clean_all, 1, 100, True)} clean; intervals over {n_seeds} training seeds "
                    "(one backbone per arm and seed), the test images fixed")))
    return out


def precondition_finding(rows: pd.DataFrame, *, eps: float, attack_label: str, factor: float = 3.0,
                         figure: str = "figures/07_laat.png") -> Finding:
    """Precondition (not a paper claim): at LAAT's radius the mini world still carries the training labels: every
    arm's robust accuracy on the fine-tuning task's test images, t-interval over seeds, is above factor x chance."""
    per = rows.groupby(["arm", "train_seed"]).agg(acc=("accuracy", "mean"), k=("num_classes", "first"))
    chance = 1 / float(per.k.iloc[0])
    ivs = {arm: findings.t_interval(part.acc) for arm, part in per.groupby(level="arm", sort=False)}
    worst = min(ivs, key=lambda a: ivs[a].estimate)
    ratio = Interval(*(v / chance for v in ivs[worst]))
    verdict = findings.judge_ahead(list(ivs.values()), threshold=factor * chance)
    return Finding(
        id="07_radius", notebook="07",
        claim=(f"Precondition (not a paper claim): the mini world tolerates the training radius {eps:g}/255: the "
               "adversarially trained backbones still classify the fine-tuning task under attack."),
        criterion=(f"{attack_label} at {eps:g}/255 on the fine-tuning task's test images: every arm's accuracy, "
                   f"t-interval over training seeds, lies above {factor:g}x chance; each arm is a part, failing if "
                   f"its interval lies below; {findings.RULE}"),
        paper="", ours=f"worst arm {worst}: {findings._ci(ratio, 1)} x chance",
        estimate=ratio.estimate, ci_low=ratio.low, ci_high=ratio.high, verdict=verdict, figure=figure,
        detail="; ".join(f"{a}: {findings._ci(iv, 3)}" for a, iv in ivs.items()))
