"""Every method in one record: what it is, how its image tower trains, which text it pairs with, what it needs,
its own knobs and its search grid.

A :class:`Method` is read by config validation (the names a parameter may take), the fine-tuning engine
(:mod:`training`: objective, training attack, teacher), the one builder of an evaluated model
(:func:`nbhelpers.suite.build_eval_model`: text side, margin offset, IAT projection), the study (:mod:`study`:
search grid, baselines) and 04/05 (which study selection a model takes). Adding a method is one
:func:`register` call (see "Adding a method" in docs/TRAINING.md).

Names: an *engine* method trains an image tower by itself (``FinetuneConfig.method`` takes these names);
a composite method reuses another's engine with another text side (TIMA = TAI's engine against IAT-tuned text;
IAT + TeCoA = TeCoA's engine against IAT-tuned text); ``zero_shot`` is the pre-trained model, not trained.

A method declares the config fields its step reads beyond the shared fine-tuning recipe (:attr:`Method.reads`, and
its training attack's :attr:`TrainingAttack.reads`): the training cache key holds those and no other method knob,
so a knob of one method never moves another's key (``tests/test_methods.py`` runs one step of every method with a
config that records what is read, and fails on an undeclared read).

This module sits low in the package (above :mod:`attacks`, below :mod:`config`): it holds the objectives and the
training attacks as functions of a :class:`StepContext` / :class:`AttackContext`.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from nbhelpers import attacks, losses
from nbhelpers.paper_data import PROTOCOL_LOGIT_UNITS, PROTOCOL_NORMS

# bump with any change to the numbers the objectives compute (see utils.numerics_versions); the objectives moved
# here from training (its version 3) without a change of number
NUMERICS_VERSION = 1

TEXT_SIDES = ("original", "iat", "laat_expanded")  # the class text an image tower trains against and is scored with
# the logits a method's objective and training attack use (CLIP's scale x cosine, or the raw cosine: PMG-AFT's released
# code re-normalises the scaled text features) and the mean/std its model's inputs are normalised with: the protocols'
# own vocabularies, declared once in paper_data
LOGIT_UNITS = PROTOCOL_LOGIT_UNITS
INPUT_NORMS = PROTOCOL_NORMS
HEADS = ("zero_shot", "linear")  # what the image tower trains through: the class text, or a new linear layer
TRAINABLE = ("all", "last_n")  # which image-tower tensors the optimiser moves (last_n: the last partial_last_n)


@dataclass
class StepContext:
    """What an objective may use at one step (all on the training device)."""

    cfg: Any  # the run's config.FinetuneConfig (config sits above this module)
    images: torch.Tensor
    adv: torch.Tensor | None
    labels: torch.Tensor
    logits: Callable[[torch.Tensor], torch.Tensor]
    features: Callable[[torch.Tensor], torch.Tensor]
    teacher: Any  # zeroshot.ZeroShotClassifier of the frozen pre-trained model, or None
    class_embeddings: torch.Tensor
    scale: float
    margins: torch.Tensor | None
    clean_targets: torch.Tensor | None = None  # FARE: frozen pre-trained embeddings of the clean images (N, D)
    # logits: the zero-shot head over class_embeddings, or the method's linear head (Method.head == "linear")


Objective = Callable[[StepContext], torch.Tensor]


@dataclass
class AttackContext:
    """What a training attack may use at one step (all on the training device)."""

    cfg: Any  # the run's config.FinetuneConfig
    images: torch.Tensor  # (N, 3, S, S) in [0, 1]
    labels: torch.Tensor  # (N,)
    head: torch.nn.Module  # images -> logits (N, C): the zero-shot head at the method's scale, or its linear head
    encoder: torch.nn.Module  # images -> the student's unnormalised embeddings (N, D)
    clean_targets: torch.Tensor | None  # frozen pre-trained embeddings of the clean images (N, D), if the attack asks
    budget: dict[str, Any]  # eps, alpha, steps (attack units), start_noise (N, 3, S, S) in [-1, 1], fast, amp


def pgd_ce_attack(ctx: AttackContext) -> torch.Tensor:
    """PGD on the cross-entropy of the training head with the labels (TeCoA and most methods)."""
    return attacks.pgd_attack(ctx.head, ctx.images, ctx.labels, **ctx.budget)


def fare_attack(ctx: AttackContext) -> torch.Tensor:
    """FARE (label-free): PGD maximising ||f_student(x_adv) - f_pretrained(x)||_2^2 on the clean targets."""
    return attacks.embedding_pgd_attack(ctx.encoder, ctx.images, ctx.clean_targets, **ctx.budget)


def coadv_attack(ctx: AttackContext) -> torch.Tensor:
    """CoAdv (label-free): PGD away from the clean view of the same image, among the batch's images (InfoNCE)."""
    with torch.no_grad():
        clean = ctx.encoder(ctx.images) if ctx.clean_targets is None else ctx.clean_targets
    return attacks.contrastive_pgd_attack(ctx.encoder, ctx.images, clean, temperature=ctx.cfg.coadv_temperature,
                                          **ctx.budget)


@dataclass(frozen=True)
class TrainingAttack:
    """A training attack: its name, the callable that makes the adversarial images (None: no attack), the config
    fields it reads beyond the shared budget (train_eps, train_alpha, train_pgd_steps, amp), and whether it needs
    the frozen pre-trained embeddings of the clean images (made by the engine, also handed to the objective)."""

    name: str
    run: Callable[[AttackContext], torch.Tensor] | None
    reads: tuple[str, ...] = ()
    clean_targets: bool = False


NO_ATTACK = TrainingAttack("none", None)
PGD_CE = TrainingAttack("pgd_ce", pgd_ce_attack)
PGD_EMBEDDING = TrainingAttack("pgd_embedding", fare_attack, clean_targets=True)
PGD_CONTRASTIVE = TrainingAttack("pgd_contrastive", coadv_attack, reads=("coadv_temperature",))
# (default knob values {field: value}, fine-tuning steps) -> the method's own knob settings, one dict per point
SearchGrid = Callable[[Mapping[str, object], int], list[dict[str, object]]]
# (round-1 pick's overrides, knob defaults, the profile's lr grid, finetune_steps) -> round-2 override dicts
Round2Grid = Callable[[Mapping[str, object], Mapping[str, object], tuple[float, ...], int], list[dict[str, object]]]


# ---------------------------------------------------------------------------------------------- objectives
def clean_ce(ctx: StepContext) -> torch.Tensor:
    """Cross-entropy of the zero-shot head on the clean images (scalar)."""
    return F.cross_entropy(ctx.logits(ctx.images), ctx.labels)


def tecoa_objective(ctx: StepContext) -> torch.Tensor:
    """TeCoA: cross-entropy of the zero-shot head on the adversarial images (scalar)."""
    return F.cross_entropy(ctx.logits(ctx.adv), ctx.labels)


def pmg_aft_objective(ctx: StepContext) -> torch.Tensor:
    """PMG-AFT: TeCoA + alpha KL(pre-trained(adv) || adv) + beta KL(clean || adv) (scalar)."""
    adv_logits, clean_logits = ctx.logits(ctx.adv), ctx.logits(ctx.images)
    with torch.no_grad():
        pre_adv = ctx.teacher(ctx.adv)
    return losses.pmg_aft_loss(adv_logits, clean_logits, pre_adv, ctx.labels, alpha=ctx.cfg.pmg_alpha,
                               beta=ctx.cfg.pmg_beta)


def pmg_aft_code_objective(ctx: StepContext) -> torch.Tensor:
    """PMG-AFT as its released code trains (PMG_AFT.py lines 713-738): CE(adv) + alpha KL_sum(pre-trained(adv) ||
    adv) + beta KL_sum(clean || adv), the clean branch with its gradient; the logits are cosines (the record's
    logit_units) and the inputs ImageNet-normalised (its input_norm), both set up by the engine (scalar)."""
    adv_logits, clean_logits = ctx.logits(ctx.adv), ctx.logits(ctx.images)
    with torch.no_grad():
        pre_adv = ctx.teacher(ctx.adv)
    return losses.pmg_aft_code_loss(adv_logits, clean_logits, pre_adv, ctx.labels, alpha=ctx.cfg.pmg_alpha,
                                    beta=ctx.cfg.pmg_beta)


def fare_objective(ctx: StepContext) -> torch.Tensor:
    """FARE: squared L2 of the adversarial embedding to the frozen clean one, relative (scalar)."""
    return losses.fare_loss(ctx.features(ctx.adv), ctx.clean_targets, relative=True)


def coadv_objective(ctx: StepContext) -> torch.Tensor:
    """CoAdv: image-image InfoNCE between the adversarial and the clean embeddings of the student (scalar)."""
    return losses.coadv_loss(ctx.features(ctx.adv), ctx.features(ctx.images), temperature=ctx.cfg.coadv_temperature)


def tai_objective(ctx: StepContext) -> torch.Tensor:
    """TIMA's TAI: margin cross-entropy (ASAM/TAM) + text-aware distillation to the pre-trained model (scalar)."""
    cfg = ctx.cfg
    adv_logits = ctx.logits(ctx.adv)  # one forward serves the margin CE and the distillation
    margin_logits = adv_logits
    if cfg.margin_kind == "tam_sample":  # per-sample gate on the image's cosine to each class's text
        margins = losses.tam_sample_margins(adv_logits / ctx.scale, ctx.labels, threshold=cfg.tam_threshold,
                                            margin=cfg.tam_margin)
        margin_logits = losses.margin_logits(adv_logits, ctx.labels, margins, scale=ctx.scale, per_sample=True)
    elif ctx.margins is not None:
        margin_logits = losses.margin_logits(adv_logits, ctx.labels, ctx.margins, scale=ctx.scale)
    loss = F.cross_entropy(margin_logits, ctx.labels)
    if cfg.takd_weight > 0:
        if cfg.takd_target == "feature":  # cosine of the adversarial embedding to the pre-trained clean one
            with torch.no_grad():
                pre = ctx.teacher.model.encode_image(ctx.images, normalize=False)
            return loss + cfg.takd_weight * losses.feature_kd(ctx.features(ctx.adv), pre)
        with torch.no_grad():
            pre_logits = ctx.teacher(ctx.adv if cfg.takd_target == "adv" else ctx.images)
        loss = loss + cfg.takd_weight * losses.text_aware_kd(adv_logits, pre_logits, temperature=cfg.takd_temperature)
    return loss


# ---------------------------------------------------------------------------------------------- search grids
# Each studied method's own knob (3 values, crossed with the study's 3 learning rates: study.search_space);
# FARE has no method weight here and gets a 9-point learning-rate grid instead (lr_only).
WARMUP_FRACTIONS: tuple[float, ...] = (0.0, 0.1, 0.25)  # TeCoA's knob: warm-up steps as a fraction of all steps
PMG_WEIGHTS: tuple[float, ...] = (0.5, 1.0, 2.0)  # PMG-AFT's knob: alpha = beta
LAAT_SPREADS: tuple[float, ...] = (1.25, 1.5, 2.0)  # LAAT-style's knob: angle expansion factor
TAI_STRENGTHS: tuple[float, ...] = (0.5, 1.0, 2.0)  # TAI's knob: factor on both the ASAM gain and the TAKD weight
SC_WEIGHTS: tuple[float, ...] = (1.0, 5.0, 25.0)  # TIMA's knob: IAT's semantic-consistency weight


def _sig(x: float) -> float:
    """x rounded to 3 significant digits (clean JSON keys for log-spaced grids)."""
    return float(f"{x:.3g}")


def _tecoa_grid(defaults: Mapping[str, object], steps: int) -> list[dict[str, object]]:
    return [{"warmup_steps": round(f * steps)} for f in WARMUP_FRACTIONS]


def _pmg_grid(defaults: Mapping[str, object], steps: int) -> list[dict[str, object]]:
    return [{"pmg_alpha": w, "pmg_beta": w} for w in PMG_WEIGHTS]


def _laat_grid(defaults: Mapping[str, object], steps: int) -> list[dict[str, object]]:
    return [{"laat_spread": s} for s in LAAT_SPREADS]


def _tai_grid(defaults: Mapping[str, object], steps: int) -> list[dict[str, object]]:
    return [tai_strength(defaults, s) for s in TAI_STRENGTHS]


def _tima_grid(defaults: Mapping[str, object], steps: int) -> list[dict[str, object]]:
    return [{"sc_weight": w} for w in SC_WEIGHTS]


# Round 2 of the search (issue 22; the confirmatory plan, docs/CONFIRMATORY_PLAN.md): EXTENSION more configurations
# per studied method, all at the round-1 pick's learning rate unless the learning rate is the axis, continuing the
# grid beyond the edge where a pick sits (in the CPU store or the H100 replica) with the grid's own ratio; a method
# with no pick on an edge (TeCoA) spends them on the learning rate half-way (geometric) to the next grid rate.
EXTENSION = 3
TAI_STRENGTHS_ROUND2: tuple[float, ...] = (4.0, 8.0, 16.0)  # TAI's pick (2) was the top of its grid: x2 on
TIMA_TAI_STRENGTHS: tuple[float, ...] = (2.0, 4.0, 8.0)  # TIMA's TAI strength, never searched (1 = default): x2 on
PMG_WEIGHTS_ROUND2: tuple[float, ...] = (4.0, 8.0, 16.0)  # the H100's pick (2) was the top of the grid: x2 on
LAAT_SPREADS_ROUND2: tuple[float, ...] = (1.125, 1.0625, 1.03125)  # pick 1.25 at the bottom: spread - 1 halved on


def _lr(pick: Mapping[str, object]) -> dict[str, object]:
    return {"finetune_lr": pick["finetune_lr"]}


def _tecoa_round2(pick: Mapping[str, object], defaults: Mapping[str, object], lrs: tuple[float, ...],
                  steps: int) -> list[dict[str, object]]:
    """No pick on an edge: the learning rate half-way (geometric) to the next grid rate, the knob's 3 values."""
    lr = float(pick["finetune_lr"])
    nxt = min((x for x in lrs if x > lr), default=lr * 10 ** 0.5)
    return [{"finetune_lr": _sig((lr * nxt) ** 0.5), "warmup_steps": round(f * steps)} for f in WARMUP_FRACTIONS]


def _pmg_round2(pick: Mapping[str, object], defaults: Mapping[str, object], lrs: tuple[float, ...],
                steps: int) -> list[dict[str, object]]:
    return [{**_lr(pick), "pmg_alpha": w, "pmg_beta": w} for w in PMG_WEIGHTS_ROUND2]


def _laat_round2(pick: Mapping[str, object], defaults: Mapping[str, object], lrs: tuple[float, ...],
                 steps: int) -> list[dict[str, object]]:
    return [{**_lr(pick), "laat_spread": s} for s in LAAT_SPREADS_ROUND2]


def tai_strength(defaults: Mapping[str, object], strength: float) -> dict[str, object]:
    """TAI's strength s: the ASAM gain and the TAKD weight, both s x their defaults (TAIKnobs, in `defaults`)."""
    return {"asam_gain": _sig(float(defaults["asam_gain"]) * strength),
            "takd_weight": _sig(float(defaults["takd_weight"]) * strength)}


def _tai_round2(pick: Mapping[str, object], defaults: Mapping[str, object], lrs: tuple[float, ...],
                steps: int) -> list[dict[str, object]]:
    return [{**_lr(pick), **tai_strength(defaults, s)} for s in TAI_STRENGTHS_ROUND2]


def _tima_round2(pick: Mapping[str, object], defaults: Mapping[str, object], lrs: tuple[float, ...],
                 steps: int) -> list[dict[str, object]]:
    """TIMA's own knob (sc_weight) measured inert in round 1: its 3 go to its TAI strength (issue 22)."""
    return [{**dict(pick), **tai_strength(defaults, s)} for s in TIMA_TAI_STRENGTHS]


def _fare_round2(pick: Mapping[str, object], defaults: Mapping[str, object], lrs: tuple[float, ...],
                 steps: int) -> list[dict[str, object]]:
    """The pick sat on the top of the learning-rate grid: its next 3 rates (the same log-spaced formula on)."""
    grid = [c["finetune_lr"] for c in lr_only_grid(lrs, 64)]
    if pick["finetune_lr"] not in grid:
        raise ValueError(f"FARE's pick {pick['finetune_lr']} is not a rate of its grid")
    k = grid.index(pick["finetune_lr"])
    return [{"finetune_lr": lr} for lr in grid[k + 1:k + 1 + EXTENSION]]


def lr_only_grid(lrs: tuple[float, ...], budget: int) -> list[dict[str, object]]:
    """`budget` log-spaced learning rates over the span of lrs widened by sqrt(10) at each end (FARE's grid)."""
    lo, hi = lrs[0], lrs[-1]
    return [{"finetune_lr": _sig(lo * (hi / lo) ** ((k - 2) / 4))} for k in range(budget)]


# ---------------------------------------------------------------------------------------------- the record
@dataclass(frozen=True)
class Method:
    """One method: every fact the package needs about it, in one place.

    engine: the engine method whose objective and attack train the image tower ('' for zero_shot, not trained);
    objective / training_attack / needs_teacher: the engine's step (engine methods only; the attack a
    :class:`TrainingAttack`);
    reads: the config fields its engine step reads beyond the shared fine-tuning recipe (objective, margins, text
    expansion, trained tensors; its attack's are :attr:`TrainingAttack.reads`): its training cache key holds them and
    no other method's knobs (engine methods only);
    text: the class text the image tower trains against and is evaluated with (TEXT_SIDES);
    needs_offset: takes the margin offset measured on the pre-trained model (01) as margin_offset;
    needs_iat: trains and is evaluated against IAT-tuned text (03's projection, tuned first);
    knobs: the config fields that are this method's own (beyond the shared fine-tuning recipe);
    search: its knob grid in 06's study (None: not studied); lr_only: the grid is learning rates only;
    round2: the round-2 configurations of the search from the round-1 pick (pick, lrs, steps -> EXTENSION dicts);
    baseline: one of the baselines TIMA is compared with in 06;
    selection: where 04/05 take its configuration from in 06's selection, as (study method, knobs taken or None
    for all of them) in order, later entries overriding earlier ones; empty: the notebook's knobs;
    head: what the tower trains through (HEADS; a linear head is dropped at evaluation: zero-shot through the tower);
    trainable: which image-tower tensors train (TRAINABLE);
    fixed: FinetuneConfig fields this method always sets (a prompted variant: ("adaptation", "visual_prompt"));
    logit_units: the logits its objective, its teacher and its training attack use (LOGIT_UNITS);
    input_norm: the normalisation of its model's inputs, in training and in the model it hands to evaluation
    (INPUT_NORMS).
    """

    name: str
    label: str
    description: str
    engine: str
    text: str = "original"
    objective: Objective | None = None
    training_attack: TrainingAttack = PGD_CE
    needs_teacher: bool = False
    needs_offset: bool = False
    needs_iat: bool = False
    knobs: tuple[str, ...] = ()
    search: SearchGrid | None = None
    lr_only: bool = False
    round2: Round2Grid | None = None
    baseline: bool = False
    selection: tuple[tuple[str, tuple[str, ...] | None], ...] = field(default=())
    head: str = "zero_shot"
    trainable: str = "all"
    fixed: tuple[tuple[str, object], ...] = ()
    logit_units: str = "scaled"
    input_norm: str = "clip"
    reads: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.logit_units not in LOGIT_UNITS or self.input_norm not in INPUT_NORMS:
            raise ValueError(f"method {self.name!r}: logit_units {self.logit_units!r} / input_norm "
                             f"{self.input_norm!r} not in {LOGIT_UNITS} / {INPUT_NORMS}")
        if self.text not in TEXT_SIDES:
            raise ValueError(f"method {self.name!r}: text {self.text!r} is not one of {TEXT_SIDES}")
        if not isinstance(self.training_attack, TrainingAttack):
            raise ValueError(f"method {self.name!r}: training_attack must be a methods.TrainingAttack (e.g. "
                             f"methods.PGD_CE), got {self.training_attack!r}")
        if self.reads and not self.is_engine:
            raise ValueError(f"method {self.name!r} reuses engine {self.engine!r}: its reads are its engine's")
        if self.head not in HEADS or self.trainable not in TRAINABLE:
            raise ValueError(f"method {self.name!r}: head {self.head!r} / trainable {self.trainable!r} not in "
                             f"{HEADS} / {TRAINABLE}")
        if self.engine == self.name and self.objective is None:
            raise ValueError(f"engine method {self.name!r} needs an objective")

    @property
    def is_engine(self) -> bool:
        """Whether FinetuneConfig.method may name it (it trains an image tower by itself)."""
        return self.engine == self.name

    @property
    def key_fields(self) -> tuple[str, ...]:
        """The config fields an engine method's step reads beyond the shared recipe: its own and its attack's."""
        return tuple(dict.fromkeys((*self.reads, *self.training_attack.reads)))

    @property
    def trained(self) -> bool:
        """Whether its image tower is fine-tuned (False only for the pre-trained zero-shot model)."""
        return bool(self.engine)

    @property
    def studied(self) -> bool:
        """Whether 06's study searches and compares it."""
        return self.search is not None or self.lr_only


_TAI_KNOBS = ("margin_kind", "asam_base", "asam_gain", "offset_weight", "offset_eps", "offset_every", "tam_threshold",
              "tam_margin", "takd_weight", "takd_temperature", "takd_target")
_IAT_KNOBS = ("iat_steps", "iat_lr", "mhe_weight", "mhe_power", "mhe_bounded", "sc_weight", "sc_kind", "sc_temperature",
              "iakd_weight", "iakd_temperature", "iat_images")

# TeCoA's motivating baselines are not searched: they train at TeCoA's selected recipe (ours: TeCoA compares them
# under one recipe too)
_TECOA_RECIPE: tuple[tuple[str, tuple[str, ...] | None], ...] = (("tecoa", ("finetune_lr", "warmup_steps")),)

_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (its name must be new; a composite's engine must be registered)."""
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    if method.engine and method.engine != method.name and method.engine not in _REGISTRY:
        raise ValueError(f"method {method.name!r}: its engine {method.engine!r} is not registered")
    for source, _ in method.selection:  # 06 selects only what it searches: another source is never filled
        record = method if source == method.name else _REGISTRY.get(source)  # (one registered later: by the tests)
        if record is not None and not record.studied:
            raise ValueError(f"method {method.name!r} takes its configuration from 06's selection of {source!r}, "
                             "which 06 does not search (no search grid): give it search= (or lr_only=True), take "
                             "another method's selection (e.g. selection=((\"tecoa\", (\"finetune_lr\", "
                             "\"warmup_steps\")),), TeCoA's recipe), or selection=() for the notebook's knobs")
    _REGISTRY[method.name] = method
    return method


@contextlib.contextmanager
def registered(method: Method) -> Iterator[Method]:
    """Register a method for the duration of a block (tests, experiments), then remove it."""
    register(method)
    try:
        yield method
    finally:
        _REGISTRY.pop(method.name, None)


def get(name: str) -> Method:
    """The record of a method, or a clear error listing the known names."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose from {list(_REGISTRY)}")
    return _REGISTRY[name]


def all_methods() -> list[Method]:
    """Every registered method, in registration order."""
    return list(_REGISTRY.values())


def model_names() -> list[str]:
    """Names of every model 04/05 can evaluate (every registered method)."""
    return list(_REGISTRY)


def engine_names() -> list[str]:
    """Names FinetuneConfig.method may take (methods that train an image tower by themselves)."""
    return [m.name for m in _REGISTRY.values() if m.is_engine]


# Methods with a search grid whose runs the committed study (results/06_study.jsonl) does not hold yet: left out of
# study_names() (so the committed selection, 04/05/06 stay current) unless the environment variable below is "1",
# which plans and runs them with the others (e.g. `TIMA_STUDY_PENDING=1 python -m nbhelpers.study_runs --plan`).
# Remove a name here once its runs are in the committed store.
STUDY_PENDING: tuple[str, ...] = ()
STUDY_PENDING_ENV = "TIMA_STUDY_PENDING"


def study_names() -> list[str]:
    """Methods 06's study searches, selects and compares, in registration order (pending ones: see STUDY_PENDING)."""
    pending = os.environ.get(STUDY_PENDING_ENV, "")
    if pending not in ("", "0", "1"):
        raise ValueError(f"environment variable {STUDY_PENDING_ENV} must be '0' or '1', got {pending!r}")
    return [m.name for m in _REGISTRY.values() if m.studied and (pending == "1" or m.name not in STUDY_PENDING)]


def baseline_names() -> list[str]:
    """The baselines TIMA is compared with in 06."""
    return [m.name for m in _REGISTRY.values() if m.baseline]


register(Method("zero_shot", "zero-shot CLIP", "the pre-trained model, not fine-tuned", engine="",
                training_attack=NO_ATTACK))
register(Method("ft_standard", "FT-Standard", "clean fine-tuning with cross-entropy over the zero-shot head (no attack)",
                engine="ft_standard", objective=clean_ce, training_attack=NO_ATTACK))
register(Method("tecoa", "TeCoA", "TeCoA: PGD on image-text cross-entropy, train on the adversarial images with it",
                engine="tecoa", objective=tecoa_objective, knobs=("warmup_steps",), search=_tecoa_grid, round2=_tecoa_round2,
                baseline=True, selection=(("tecoa", None),)))
register(Method("pmg_aft", "PMG-AFT", "PMG-AFT: TeCoA + alpha KL(pre-trained(adv) || adv) + beta KL(clean || adv)",
                engine="pmg_aft", objective=pmg_aft_objective, needs_teacher=True, knobs=("pmg_alpha", "pmg_beta"),
                reads=("pmg_alpha", "pmg_beta"), search=_pmg_grid, round2=_pmg_round2, baseline=True, selection=(("pmg_aft", None),)))
register(Method("pmg_aft_code", "PMG-AFT (released code)", "PMG-AFT as PMG_AFT.py (a53fdd8) runs it: TeCoA + "
                "alpha KL_sum(pre-trained(adv) || adv) + beta KL_sum(clean || adv) summed over the batch, clean branch "
                "with gradient, cosine logits (no logit scale) in its losses and training attack, ImageNet "
                "mean/std normalisation", engine="pmg_aft_code", objective=pmg_aft_code_objective, needs_teacher=True,
                knobs=("pmg_alpha", "pmg_beta"), reads=("pmg_alpha", "pmg_beta"), search=_pmg_grid,
                round2=_pmg_round2, selection=(("pmg_aft_code", None),), logit_units="cosine", input_norm="imagenet"))
register(Method("laat", "LAAT-style", "LAAT-style: TeCoA's objective against expanded text anchors (rotated to a "
                "pole, angles spread)", engine="laat", text="laat_expanded", objective=tecoa_objective,
                knobs=("laat_spread",), reads=("laat_spread",), search=_laat_grid, round2=_laat_round2, baseline=True,
                selection=(("laat", None),)))
register(Method("fare", "FARE", "FARE: unsupervised; label-free PGD maximises the L2 distance to the frozen clean "
                "embedding, then trains it down", engine="fare", objective=fare_objective,
                training_attack=PGD_EMBEDDING, needs_teacher=True, lr_only=True, round2=_fare_round2, baseline=True,
                selection=(("fare", None),)))
register(Method("tai", "TAI (TIMA w/o IAT)", "TIMA's TAI: TeCoA with text-distance adaptive margins (TAM/ASAM) + "
                "text-aware distillation", engine="tai", objective=tai_objective, needs_teacher=True,
                needs_offset=True, knobs=_TAI_KNOBS, reads=(*_TAI_KNOBS, "margin_offset"), search=_tai_grid,
                round2=_tai_round2, selection=(("tai", None),)))
register(Method("onehot_at", "Standard AT (one-hot, linear head)", "TeCoA's motivating baseline: PGD on a new "
                "linear head's cross-entropy over the fine-tuning classes, trained on the adversarial images with it; "
                "evaluated zero-shot through its image tower", engine="onehot_at", objective=tecoa_objective,
                head="linear", selection=_TECOA_RECIPE))
register(Method("coadv", "CoAdv (image-image contrastive AT)", "TeCoA's baseline: label-free PGD on an image-image "
                "InfoNCE (adversarial vs clean views), trained down with it", engine="coadv", objective=coadv_objective,
                training_attack=PGD_CONTRASTIVE, knobs=("coadv_temperature",), selection=_TECOA_RECIPE))
register(Method("tecoa_partial", "TeCoA, partial fine-tuning", "TeCoA trained on the last partial_last_n parameter "
                "tensors of the image tower only (TeCoA's --last_num_ft)", engine="tecoa_partial",
                objective=tecoa_objective, trainable="last_n", knobs=("partial_last_n",), reads=("partial_last_n",),
                selection=_TECOA_RECIPE))
_PROMPTED = (("adaptation", "visual_prompt"),)
register(Method("tecoa_vp", "TeCoA (visual prompt)", "TeCoA's objective with CLIP frozen, its visual prompts trained "
                "(TeCoA's second adaptation)", engine="tecoa", fixed=_PROMPTED, knobs=("prompt_pad", "prompt_tokens",
                "prompt_lr"), selection=(("tecoa", ("warmup_steps",)),)))
register(Method("pmg_aft_vp", "PMG-AFT (visual prompt)", "PMG-AFT's objective with CLIP frozen, its visual prompts "
                "trained", engine="pmg_aft", fixed=_PROMPTED,
                knobs=("pmg_alpha", "pmg_beta", "prompt_pad", "prompt_tokens", "prompt_lr"),
                selection=(("pmg_aft", ("pmg_alpha", "pmg_beta")),)))
register(Method("iat_tecoa", "IAT + TeCoA (TIMA w/o TAI)", "TeCoA's engine against IAT-tuned text", engine="tecoa",
                text="iat", needs_iat=True, knobs=_IAT_KNOBS, selection=(("tecoa", None), ("tima", ("sc_weight",)))))
register(Method("tima", "TIMA (IAT + TAI)", "TIMA: IAT text tuning first, then TAI against the tuned text",
                engine="tai", text="iat", needs_offset=True, needs_iat=True, knobs=_TAI_KNOBS + _IAT_KNOBS,
                search=_tima_grid, round2=_tima_round2, selection=(("tima", None),)))
register(Method("tima_vp", "TIMA (visual prompt)", "TIMA with CLIP frozen: IAT text first, then TAI trains the visual "
                "prompts", engine="tai", text="iat", needs_offset=True, needs_iat=True, fixed=_PROMPTED,
                knobs=_TAI_KNOBS + _IAT_KNOBS + ("prompt_pad", "prompt_tokens", "prompt_lr"),
                selection=(("tima", ("sc_weight",)),)))


def selected_overrides(name: str, selected: Mapping[str, Mapping[str, object]]) -> dict[str, object]:
    """The overrides model `name` takes from 06's selection {study method: overrides} (empty: the notebook's knobs)."""
    out: dict[str, object] = {}
    for source, keys in get(name).selection:
        if source not in selected:
            raise KeyError(f"{name} takes its configuration from 06's selection of {source!r}, which the selection "
                           f"lacks (it holds {sorted(selected)}): run 06's study for it (a pending method: "
                           f"{STUDY_PENDING_ENV}=1), or pass configs=\"knobs\"")
        out.update({k: v for k, v in selected[source].items() if keys is None or k in keys})
    return out

