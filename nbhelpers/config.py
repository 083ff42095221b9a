"""Every parameter of the project, declared once: flat, typed, validated, frozen configs.

Each field is declared exactly once, with its default and a one-line help (``knob(default, help)``). Knob sets
that several notebooks and the CLIs share (fine-tuning, TAI, IAT) are mixins, so ``python -m nbhelpers.training``
and notebooks 03-05 train the same model for the same knobs. A notebook's ``parameters`` cell is generated from
its config class (:func:`parameters_cell`, ``scripts/sync_parameters.py``) and a test checks that what papermill
reads equals the class's fields and defaults; the notebook then builds its config from its namespace
(:meth:`Config.from_namespace`), which refuses any name the config does not know.

Every field is checked against its annotation (an int is accepted for a float; a bool is never a number) and
then against its allowed values, so a wrong ``papermill -p`` value stops the notebook in its validation cell,
before any work and before anything is written, with a message naming the parameter and what it accepts.

This module sits low in the package: it imports only :mod:`world`, :mod:`paper_data`, :mod:`attacks` and
:mod:`methods` (for the names it validates against), never the modules that use the configs.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nbhelpers import methods, world
from nbhelpers.attacks import ATTACKS, START_SCHEMES
from nbhelpers.paper_data import (DEFAULT_PROTOCOL, DEFAULT_SAMPLING, PROTOCOLS, SAMPLING_RULES, list_paper_datasets,
                                  list_validation_datasets)

MAX_EPS = 64.0  # in 1/255 units; anything larger is almost surely a unit mistake (pixels vs /255)
PROFILES = ("mini", "paper")
PAPER_FINETUNE_SET = "tinyimagenet"

# ---------------------------------------------------------------------------------------------- registries
# The methods (names, labels, what they need) live in nbhelpers.methods, one record each; the other names here.
MARGIN_KINDS = ("asam", "tam", "tam_sample", "none")
TAKD_TARGETS = ("clean", "adv", "feature")
SC_KINDS = ("cosine", "row_softmax")
TEXT_SOURCES = ("original", "iat")
_IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


class ConfigError(ValueError):
    """A parameter has an unknown name, the wrong type or a value it may not take."""


def knob(default: object, help: str, *, in_repr: bool = True) -> typing.Any:  # noqa: A002 - 'help' is natural here
    """A config field: its one default and its one-line help (shown in the notebooks' parameters cells).

    The help may not hold "=" nor a line break: papermill reads a parameters-cell line `name: type = value  # help`
    and silently drops a line whose comment holds another "=" (scripts/sync_parameters.py --check also reads every
    cell back through papermill). in_repr=False leaves the field out of the config's repr, which the rendered
    notebooks print: a knob added later then moves no committed notebook output (it is still a parameter, listed in
    the parameters cell)."""
    if "=" in help or "\n" in help:
        raise ValueError(f"a knob's help may not hold '=' or a line break (papermill would drop its parameter): "
                         f"{help!r}; write 'is', 'equal to' or ':' instead")
    if isinstance(default, list):
        return field(default_factory=lambda d=tuple(default): list(d), metadata={"help": help}, repr=in_repr)
    return field(default=default, metadata={"help": help}, repr=in_repr)


def _type_ok(value: object, hint: object) -> bool:
    """Whether value matches a simple annotation (int, float, str, bool, list[...])."""
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(hint) or (object,)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, inner) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _type_name(hint: object) -> str:
    return getattr(hint, "__name__", None) or str(hint)


def valid_datasets(profile: str) -> list[str]:
    """Zero-shot evaluation datasets of a profile (the reported test tasks)."""
    if profile == "mini":
        return list(world.ZERO_SHOT_TASKS)
    return list_paper_datasets()


def finetune_set_for(profile: str) -> str:
    """The dataset the image side is fine-tuned on: the mini world's pattern_shapes, or TinyImageNet."""
    return world.FINETUNE_TASK if profile == "mini" else PAPER_FINETUNE_SET


@dataclass(frozen=True)
class Config:
    """Type checking, value-check helpers and construction from parameters; no fields of its own."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _type_ok(value, hints[f.name]):
                raise ConfigError(f"parameter {f.name!r} must be {_type_name(hints[f.name])}, "
                                  f"got {type(value).__name__} {value!r}")
            if isinstance(value, list):  # freeze lists
                object.__setattr__(self, f.name, tuple(value))
        self.check()

    def check(self) -> None:
        """Value checks; every mixin extends them with super().check()."""

    def _choice(self, name: str, allowed: list[str] | tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in allowed:
            raise ConfigError(f"parameter {name!r} = {value!r} is not allowed; choose one of {list(allowed)}")

    def _positive(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) <= 0:
                raise ConfigError(f"parameter {name!r} must be > 0, got {getattr(self, name)}")

    def _non_negative(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) < 0:
                raise ConfigError(f"parameter {name!r} must be >= 0, got {getattr(self, name)}")

    def _eps(self, name: str) -> None:
        values = getattr(self, name)
        for v in values if isinstance(values, tuple) else (values,):
            if v < 0 or v > MAX_EPS:
                raise ConfigError(f"parameter {name!r} is in 1/255 units and must lie in [0, {MAX_EPS:g}], got {v}")

    def _increasing(self, name: str, *, allow_empty: bool = False) -> None:
        values = list(getattr(self, name))
        if values != sorted(set(values)) or (not values and not allow_empty):
            raise ConfigError(f"parameter {name!r} must be {'' if allow_empty else 'non-empty and '}strictly "
                              f"increasing, got {values}")

    def _datasets(self, name: str) -> None:
        allowed = valid_datasets(getattr(self, "profile", "mini"))
        bad = [d for d in getattr(self, name) if d not in allowed]
        if bad:
            raise ConfigError(f"parameter {name!r} has unknown dataset(s) {bad}; choose from {allowed} (empty: all)")

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of every parameter, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def defaults(cls) -> dict[str, object]:
        """{name: default} of every parameter."""
        return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(cls)}

    @classmethod
    def from_params(cls, **params: object) -> "Config":
        """Build from named parameters; an unknown name is an error that lists the valid ones."""
        unknown = sorted(set(params) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"unknown parameter(s) {unknown} for {cls.__name__}; valid parameters: "
                              f"{sorted(cls.field_names())}")
        return cls(**params)  # type: ignore[arg-type]

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, object]) -> "Config":
        """Build from a notebook's globals (its parameters cell and papermill's injected cell), as nanoGPT does.

        Every public, non-module, non-callable name of the namespace must be a parameter of the config: a name
        papermill injected that the notebook does not declare (a typo, another notebook's parameter) is refused.
        """
        params = {k: v for k, v in namespace.items()
                  if not k.startswith("_") and k not in _IPYTHON_NAMES
                  and not isinstance(v, types.ModuleType) and not callable(v)}
        return cls.from_params(**params)

    def to_dict(self) -> dict:
        """Plain dict (lists for tuples), for result metadata and cache keys."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: object) -> "Config":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------- knob sets


@dataclass(frozen=True)
class BaseConfig(Config):
    """What every notebook and CLI has: profile, backbone and weights, data, device, batch, evaluation seed."""

    profile: str = knob("mini", '"mini" (embedded world, CPU, offline) or "paper" (open_clip backbone + local datasets)')
    model: str = knob("auto", 'open_clip architecture; "auto": mini-clip (mini), ViT-B-32 (paper)')
    pretrained: str = knob("auto", 'weights; "auto": committed mini CLIP (mini) or "openai" (paper); "none": random init')
    checkpoint: str = knob("", "a local weights file in any released format (nbhelpers.checkpoints); an image-tower file goes on top of pretrained (empty: none)")
    data_root: str = knob("", "paper profile: folder holding the datasets (empty: ./data)")
    device: str = knob("auto", '"auto", "cpu", "cuda" or "cuda:N"')
    batch_size: int = knob(256, "images per attack/evaluation batch (speed only)")
    seed: int = knob(0, "evaluation seed: test images, attack random starts")
    amp: bool = knob(False, "bf16 autocast in attacks and training (for GPUs; losses stay fp32)")
    protocol: str = knob("auto", 'paper: how images are read and resized: "tecoa" (TeCoA/PMG-AFT, "auto"), "tga_zsr", "clip"; mini: "auto"')

    def check(self) -> None:
        super().check()
        self._choice("profile", PROFILES)
        self._choice("protocol", ["auto", *(p for p in PROTOCOLS if p != "mini")] if self.profile == "paper"
                     else ["auto", "mini"])
        self._non_negative("seed")
        self._positive("batch_size")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ConfigError(f"parameter 'device' must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.profile == "mini":
            self._choice("model", ["auto", "mini-clip"])
            if self.pretrained not in ("auto", "none"):
                raise ConfigError(f"parameter 'pretrained' = {self.pretrained!r} is not allowed on the mini profile; "
                                  "choose 'auto' (the committed mini CLIP), 'none', or pass 'checkpoint'")
        elif not self.model:
            raise ConfigError("parameter 'model' must name an open_clip architecture (or 'auto')")

    def model_spec(self) -> dict[str, str]:
        """What create_model_and_transforms takes: profile, model, pretrained, checkpoint, protocol."""
        return {"profile": self.profile, "model": self.model, "pretrained": self.pretrained,
                "checkpoint": self.checkpoint, "protocol": self.protocol}

    def protocol_name(self) -> str:
        """The evaluation protocol in force: "mini", or the paper one ("auto" = the peers', TeCoA's)."""
        if self.profile == "mini":
            return "mini"
        return DEFAULT_PROTOCOL if self.protocol == "auto" else self.protocol


@dataclass(frozen=True)
class FinetuneKnobs(Config):
    """The adversarial fine-tuning recipe shared by every method (notebooks 03-05 and the training CLI)."""

    train_task: str = knob("auto", 'fine-tuning set; "auto": pattern_shapes (mini), tinyimagenet (paper)')
    finetune_steps: int = knob(200, "SGD steps of every fine-tuned model")
    finetune_lr: float = knob(0.001, "peak SGD learning rate (paper scale: about 1e-5)")
    train_batch_size: int = knob(128, "fine-tuning batch size (global, over all ranks)")
    warmup_steps: int = knob(20, "linear warm-up steps before the cosine decay")
    momentum: float = knob(0.9, "SGD momentum")
    weight_decay: float = knob(0.0, "SGD weight decay")
    train_eps: float = knob(1.0, "training PGD radius in 1/255 units")
    train_pgd_steps: int = knob(2, "training PGD steps")
    train_alpha: float = knob(1.0, "training PGD step size in 1/255 units")
    train_seed: int = knob(0, "training seed: data order, attack noise, text tuning (separate from seed)")
    pmg_alpha: float = knob(1.0, "PMG-AFT: weight of KL(pre-trained(adv) || adv)")
    pmg_beta: float = knob(1.0, "PMG-AFT: weight of KL(clean || adv)")
    laat_spread: float = knob(1.5, "LAAT-style expansion: factor on the angle from the anchors' mean")

    def check(self) -> None:
        super().check()
        profile = getattr(self, "profile", "mini")
        if self.train_task != "auto":
            if profile == "mini":
                self._choice("train_task", [world.FINETUNE_TASK])
            else:
                self._choice("train_task", list_paper_datasets())
        self._positive("finetune_steps", "finetune_lr", "train_batch_size", "train_pgd_steps", "laat_spread")
        self._non_negative("warmup_steps", "weight_decay", "train_seed", "pmg_alpha", "pmg_beta")
        self._eps("train_eps")
        self._eps("train_alpha")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"parameter 'momentum' must be in [0, 1), got {self.momentum}")

    def finetune_task(self) -> str:
        """The fine-tuning set, with 'auto' resolved for the profile."""
        return finetune_set_for(getattr(self, "profile", "mini")) if self.train_task == "auto" else self.train_task


@dataclass(frozen=True)
class TAIKnobs(Config):
    """TIMA's image module (TAI): adaptive margins and text-aware distillation."""

    margin_kind: str = knob("asam", 'TAI margin: "asam" (AAAI), "tam" (v1, text-text gate), "tam_sample" (v1, per-sample image-text gate) or "none"')
    asam_base: float = knob(0.0, "ASAM margin for unrelated classes, cosine units")
    asam_gain: float = knob(0.05, "ASAM growth per unit of text cosine similarity")
    offset_weight: float = knob(0.2, "weight of the measured margin offset in the ASAM margin (0: off)")
    offset_eps: float = knob(4.0, "ASAM: large radius of the measured margin offset (small: train_eps), 1/255 units")
    offset_every: int = knob(0, "ASAM: re-measure the offset on the model being trained every k steps (0: once, pre-trained)")
    tam_threshold: float = knob(0.5, "TAM: text similarity above which a class pair gets the margin")
    tam_margin: float = knob(0.1, "TAM margin, cosine units")
    takd_weight: float = knob(1.0, "weight of text-aware distillation (0: off)")
    takd_temperature: float = knob(1.0, "temperature of text-aware distillation")
    takd_target: str = knob("clean", 'TAKD: "clean" (pre-trained on clean images), "adv" (on the adversarial ones) or "feature" (cosine to its embedding)')

    def check(self) -> None:
        super().check()
        self._choice("margin_kind", MARGIN_KINDS)
        self._choice("takd_target", TAKD_TARGETS)
        self._eps("offset_eps")
        self._non_negative("asam_base", "asam_gain", "tam_margin", "offset_weight", "takd_weight", "offset_every")
        self._positive("takd_temperature")

    def tai_knobs(self) -> dict[str, object]:
        """These knobs as a dict (FinetuneConfig overrides)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(TAIKnobs)}


@dataclass(frozen=True)
class IATKnobs(Config):
    """TIMA's text module (IAT): MHE spreading, semantic consistency, image-aware distillation (Adam on the
    text projection)."""

    iat_steps: int = knob(150, "Adam steps of text tuning")
    iat_lr: float = knob(0.002, "text tuning learning rate")
    mhe_weight: float = knob(1.0, "weight of the MHE energy")
    mhe_power: float = knob(2.0, "power of the distance in the energy")
    mhe_bounded: bool = knob(True, "energy 1/(1+d^p) (bounded) or 1/d^p")
    sc_weight: float = knob(5.0, "weight of the semantic-consistency term (SC-MHE)")
    sc_kind: str = knob("cosine", 'consistency term: "cosine" (squared change of pairwise cosines) or "row_softmax" (KL of row-softmaxed similarities; allows uniform spreading)')
    sc_temperature: float = knob(0.05, 'temperature of the "row_softmax" consistency term')
    iakd_weight: float = knob(1.0, "weight of image-aware distillation (IAKD)")
    iakd_temperature: float = knob(1.0, "temperature of image-aware distillation")
    iat_images: int = knob(1024, "fine-tuning images whose pre-trained embeddings feed IAKD")

    def check(self) -> None:
        super().check()
        self._positive("iat_steps", "iat_lr", "mhe_power", "iakd_temperature", "iat_images", "sc_temperature")
        self._choice("sc_kind", SC_KINDS)
        self._non_negative("mhe_weight", "sc_weight", "iakd_weight")

    def iat_knobs(self) -> dict[str, object]:
        """These knobs as a dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(IATKnobs)}


@dataclass(frozen=True)
class BaselineKnobs(Config):
    """TeCoA's motivating baselines (methods onehot_at, coadv, tecoa_partial): the details TeCoA leaves open, ours.

    A separate knob set, not part of 06's study recipe: the study never trains these methods, so its keys do not
    move when they are added."""

    partial_last_n: int = knob(9, "tecoa_partial (TeCoA's --last_num_ft): train only the last N parameter tensors of the image tower (ours: 9, the mini ResNet's attention pool)")
    coadv_temperature: float = knob(0.1, "coadv: temperature of the image-image InfoNCE (ours)")

    def check(self) -> None:
        super().check()
        self._positive("partial_last_n", "coadv_temperature")


PREFETCH_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class DeviceKnobs(Config):
    """How fast a run goes on its device, never what it computes beyond float rounding: torch.compile of the image
    tower and reading the next training batch ahead. Its own knob set, outside 06's study recipe, and left out of
    the training cache key by name (training.SPEED_ONLY), so adding it moved no key."""

    compile_tower: bool = knob(False, "torch.compile the image tower while training (for GPUs; same math, other float rounding; the first steps compile)")
    prefetch: str = knob("auto", '"auto" (on for CUDA), "on" or "off": read the next training batch in a background thread (into pinned memory on CUDA)')
    decode_workers: int = knob(0, "paper: worker processes that decode the training JPEGs of each batch (0: in this process); the same images in the same order")

    def check(self) -> None:
        super().check()
        self._choice("prefetch", PREFETCH_MODES)
        self._non_negative("decode_workers")

    def prefetch_on(self, device_type: str) -> bool:
        """Whether training reads ahead on a device of this type ('cuda', 'cpu', ...): "auto" means CUDA only."""
        return self.prefetch == "on" or (self.prefetch == "auto" and device_type == "cuda")


@dataclass(frozen=True)
class StartKnobs(Config):
    """How PGD's random starts are drawn (training and evaluation): a numbers knob, in a key only where it is not
    "legacy" (training.cache_key, the study's stage evaluation, 05's rows), so the mini stores keep their keys."""

    attack_start: str = knob("auto", 'PGD random starts: "legacy" (CPU generator per call; mini, "auto"), "counter" (counter-based hash of seed and image index, drawn on the device: the same bits on every device and batch size; paper, "auto")', in_repr=False)

    def check(self) -> None:
        super().check()
        self._choice("attack_start", ["auto", *START_SCHEMES])

    def start_scheme(self) -> str:
        """The scheme in force: attack_start, with "auto" = "legacy" on mini (its committed stores) and "counter" on
        paper."""
        if self.attack_start != "auto":
            return self.attack_start
        return "legacy" if getattr(self, "profile", "mini") == "mini" else "counter"


ADAPTATIONS = ("finetune", "visual_prompt")


@dataclass(frozen=True)
class AdaptationKnobs(Config):
    """How the image side adapts (issue 21): fine-tuning the tower, or TeCoA's visual prompts with CLIP frozen.

    Its own knob set, not part of 06's study recipe (the study fine-tunes), so adding it moved no study key."""

    adaptation: str = knob("finetune", '"finetune" (tune the image tower) or "visual_prompt" (CLIP frozen; TeCoA\'s padding prompt, plus token prompts on ViT towers)')
    prompt_pad: int = knob(-1, "padding prompt width in px; -1: TeCoA's 30 px at 224, scaled to the input (4 px on mini)")
    prompt_tokens: int = knob(100, "token prompts appended at the input layer of a ViT tower (TeCoA: 100); a ResNet tower takes none")
    prompt_lr: float = knob(40.0, "peak SGD learning rate of the prompts (TeCoA: 40); finetune_lr is the tower's")

    def check(self) -> None:
        super().check()
        self._choice("adaptation", ADAPTATIONS)
        self._positive("prompt_lr")
        self._non_negative("prompt_tokens")
        if self.prompt_pad < -1 or self.prompt_pad == 0:
            raise ConfigError(f"parameter 'prompt_pad' must be -1 (auto) or a width >= 1 px, got {self.prompt_pad}")


# ---------------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class IATConfig(IATKnobs, FinetuneKnobs, BaseConfig):
    """One IAT text-tuning run (its fine-tuning knobs name the training set and seed)."""

    def key_payload(self) -> dict:
        """What changes the tuned projection: the IAT knobs, the training set and seed, the backbone (the weights' content
        is added by text_tuning.projection_key)."""
        return {**self.iat_knobs(), "train_task": self.finetune_task(), "train_seed": self.train_seed,
                "profile": self.profile, "model": self.model, "pretrained": self.pretrained}


@dataclass(frozen=True)
class FinetuneConfig(StartKnobs, DeviceKnobs, AdaptationKnobs, BaselineKnobs, TAIKnobs, FinetuneKnobs, BaseConfig):
    """One adversarial fine-tuning run of one method (the training CLI's flags are exactly these fields)."""

    method: str = knob("tecoa", "fine-tuning objective (an engine method of nbhelpers.methods): " +
                       ", ".join(methods.engine_names()))
    margin_offset: float = knob(0.0, "TAI/ASAM: measured margin offset in cosine units (01's finding 1)")
    text_source: str = knob("original", 'class text the image side trains against: "original" or "iat"')
    iat_projection: str = knob("", 'text_source "iat": the tuned text projection file (from 03)')
    checkpoint_every: int = knob(50, "steps between resumable checkpoints")

    def check(self) -> None:
        super().check()
        self._choice("method", methods.engine_names())
        self._choice("text_source", TEXT_SOURCES)
        self._positive("checkpoint_every")
        if self.text_source == "iat" and not self.iat_projection:
            raise ConfigError("parameter 'text_source' = 'iat' needs 'iat_projection' (a file from notebook 03)")


# ---------------------------------------------------------------------------------------------- notebooks


@dataclass(frozen=True)
class MiniWorldConfig(BaseConfig):
    """00_mini_world: the world (or the paper datasets), samples, and the base model's clean/robust accuracy."""

    datasets: list[str] = knob([], "zero-shot datasets to evaluate; empty means all of the profile")
    n_samples: int = knob(512, "first-N test images per dataset")
    eps_list: list[float] = knob([0.0, 1.0, 2.0, 4.0, 8.0], "PGD radii in 1/255 units; must contain 0 (clean) and 4")
    pgd_steps: int = knob(10, "PGD steps (uniform random start, step 1/255)")
    n_gallery: int = knob(18, "images shown in the gallery")

    def check(self) -> None:
        super().check()
        self._positive("n_samples", "pgd_steps", "n_gallery")
        self._eps("eps_list")
        self._datasets("datasets")
        if list(self.eps_list) != sorted(set(self.eps_list)) or 0.0 not in self.eps_list or 4.0 not in self.eps_list:
            raise ConfigError("parameter 'eps_list' must be strictly increasing and contain 0 (clean) and 4 "
                              f"(the fragility target), got {list(self.eps_list)}")
        if self.profile == "mini" and self.n_samples > world.TEST_POOL:
            raise ConfigError(f"parameter 'n_samples' must be <= {world.TEST_POOL}, got {self.n_samples}")

    def eval_datasets(self) -> list[str]:
        """The datasets to evaluate (all zero-shot ones of the profile when the parameter is empty)."""
        return list(self.datasets) or valid_datasets(self.profile)


@dataclass(frozen=True)
class _OneDatasetKnobs(Config):
    """One dataset attacked at one radius (01 and 02)."""

    dataset: str = knob("objects", "dataset; mini: shapes, colours, patterns, objects, colour_patterns; paper: cifar10, ...")
    eps: float = knob(4.0, "attack radius in 1/255 units")
    pgd_steps: int = knob(10, "PGD steps (uniform random start, step 1/255)")
    attack_loss: str = knob("ce", '"ce" (cross-entropy) or "cw" (margin loss)')

    def check(self) -> None:
        super().check()
        self._choice("dataset", valid_datasets(getattr(self, "profile", "mini")))
        self._eps("eps")
        self._positive("pgd_steps")
        self._choice("attack_loss", ["ce", "cw"])

    def _n_ok(self) -> None:
        self._positive("n_samples")
        if getattr(self, "profile", "mini") == "mini" and getattr(self, "n_samples") > world.TEST_POOL:
            raise ConfigError(f"parameter 'n_samples' must be <= {world.TEST_POOL} on the mini profile "
                              f"(the size of each test set), got {getattr(self, 'n_samples')}")


@dataclass(frozen=True)
class MarginOffsetConfig(_OneDatasetKnobs, BaseConfig):
    """01_margin_offset: eps is the large radius compared with the smallest of eps_list."""

    eps_list: list[float] = knob([1.0, 2.0, 4.0, 8.0], "attack radii in 1/255 units, increasing (eps must be one of them)")
    n_samples: int = knob(1024, "first-N test images")

    def check(self) -> None:
        super().check()
        self._n_ok()
        self._eps("eps_list")
        if len(self.eps_list) < 2:
            raise ConfigError("parameter 'eps_list' must name at least two eps (1/255 units) to compare")
        self._increasing("eps_list")
        if self.eps not in self.eps_list or self.eps == self.eps_list[0]:
            raise ConfigError(f"parameter 'eps' = {self.eps} must be one of eps_list {list(self.eps_list)} "
                              "other than the smallest (it is the large radius of the headline comparison)")


@dataclass(frozen=True)
class AnalysisConfig(_OneDatasetKnobs, BaseConfig):
    """02_margin_vs_similarity."""

    n_samples: int = knob(2048, "first-N test images")

    def check(self) -> None:
        super().check()
        self._n_ok()


@dataclass(frozen=True)
class _EvalKnobs(Config):
    """Zero-shot evaluation of fine-tuned models (03, 04)."""

    datasets: list[str] = knob([], "zero-shot datasets to evaluate; empty means all of the profile")
    n_samples: int = knob(512, "first-N test images per dataset")
    eps: float = knob(4.0, "large evaluation radius in 1/255 units")
    pgd_steps: int = knob(10, "evaluation PGD steps (random start, step 1/255)")

    def check(self) -> None:
        super().check()
        self._eps("eps")
        self._positive("n_samples", "pgd_steps")
        self._datasets("datasets")
        if getattr(self, "profile", "mini") == "mini" and self.n_samples > world.TEST_POOL:
            raise ConfigError(f"parameter 'n_samples' must be <= {world.TEST_POOL} on the mini profile")

    def eval_datasets(self) -> list[str]:
        """The datasets to evaluate (all zero-shot ones of the profile when the parameter is empty)."""
        return list(self.datasets) or valid_datasets(getattr(self, "profile", "mini"))


CONFIG_SOURCES = ("auto", "selected", "knobs")


@dataclass(frozen=True)
class SelectionKnobs(Config):
    """Where 04 and 05 take each method's configuration from."""

    configs: str = knob("auto", '"selected": each method at the configuration 06 selected on the validation tasks (results/06_study.jsonl); "knobs": the knobs below, as you set them; "auto": selected on mini; on paper (no study there yet) it refuses to train, so pass "knobs" with a finetune_lr you stand behind')

    def check(self) -> None:
        super().check()
        self._choice("configs", CONFIG_SOURCES)
        trains = any(methods.get(m).trained for m in getattr(self, "models", ["tecoa"]) if m in methods.model_names())
        if self.configs == "auto" and getattr(self, "profile", "mini") != "mini" and trains:
            raise ConfigError("parameter 'configs' = 'auto' has no study selection to take on the paper profile (no "
                              "paper study has been run), and the knobs' defaults are the mini profile's: pass "
                              "configs='knobs' with the finetune_lr (and method knobs) you stand behind")

    def uses_selection(self) -> bool:
        """Whether each method takes the study's selected configuration (mini only: no paper study exists yet)."""
        if self.configs == "selected" and getattr(self, "profile", "mini") != "mini":
            raise ConfigError("parameter 'configs' = 'selected' needs the mini profile: 06's selection exists "
                              "only there; use 'knobs' (or 'auto') on the paper profile")
        return self.configs == "selected" or (self.configs == "auto" and getattr(self, "profile", "mini") == "mini")


@dataclass(frozen=True)
class ReleasedKnobs(Config):
    """Released checkpoints that 04 and 05 evaluate beside the models trained here (issue 19)."""

    checkpoints: str = knob("", 'released models evaluated as extra rows: JSON object {"label": "/path/to/weights"}, any format of nbhelpers.checkpoints (empty: none)')

    def check(self) -> None:
        super().check()
        self.released_checkpoints()

    def released_checkpoints(self) -> dict[str, str]:
        """{label: path} of the released checkpoints (each an existing file), parsed from the JSON parameter."""
        if not self.checkpoints.strip():
            return {}
        try:
            parsed = json.loads(self.checkpoints)
        except json.JSONDecodeError as err:
            raise ConfigError(f"parameter 'checkpoints' must be a JSON object {{\"label\": \"/path\"}}, got "
                              f"{self.checkpoints!r} ({err})") from err
        if not isinstance(parsed, dict) or not all(isinstance(k, str) and isinstance(v, str) and k and v
                                                   for k, v in parsed.items()):
            raise ConfigError(f"parameter 'checkpoints' must map non-empty labels to file paths, got {parsed!r}")
        for label, path in parsed.items():
            if not Path(path).expanduser().is_file():
                raise ConfigError(f"parameter 'checkpoints': {label!r} names {path!r}, which is not a file; pass the "
                                  "released weights file itself (e.g. TeCoA's model_best.pth.tar)")
            if any(label in (m.name, m.label) for m in methods.all_methods()):
                raise ConfigError(f"parameter 'checkpoints': label {label!r} is the name of a model trained here; "
                                  "choose another, e.g. 'TeCoA (released)'")
        return {label: str(Path(path).expanduser()) for label, path in parsed.items()}


def split_overrides(overrides: Mapping[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    """(FinetuneConfig overrides, IAT overrides) of one configuration; an unknown name is an error."""
    ft_names, iat_names = set(FinetuneConfig.field_names()), set(IATKnobs.field_names())
    unknown = sorted(set(overrides) - ft_names - iat_names)
    if unknown:
        raise ValueError(f"override(s) {unknown} are neither fine-tuning nor IAT parameters")
    return ({k: v for k, v in overrides.items() if k in ft_names},
            {k: v for k, v in overrides.items() if k in iat_names})


class _RunsMixin:
    """Builds the run configs (fine-tuning, IAT) of a notebook config from its shared knob fields."""

    def finetune_config(self, method: str, **overrides: object) -> FinetuneConfig:
        """The FinetuneConfig of `method` under this config's shared knobs (TAI knobs included if it has them)."""
        names = set(FinetuneConfig.field_names()) - {"method", "margin_offset", "text_source", "iat_projection",
                                                      "checkpoint_every"}
        params = {n: getattr(self, n) for n in names if hasattr(self, n)}
        return FinetuneConfig.from_params(**{**params, "method": method, **overrides})

    def iat_config(self, **overrides: object) -> IATConfig:
        """The IATConfig of this config's IAT knobs (overrides switch terms off for the ablation variants)."""
        params = {n: getattr(self, n) for n in IATConfig.field_names() if hasattr(self, n)}
        return IATConfig.from_params(**{**params, **overrides})


@dataclass(frozen=True)
class IATNotebookConfig(_RunsMixin, _EvalKnobs, IATKnobs, FinetuneKnobs, BaseConfig):
    """03_iat: text tuning three ways, paired with the pre-trained and a TeCoA image tower."""

    def iat_variants(self) -> dict[str, IATConfig]:
        """IATConfig per text variant: MHE alone, SC-MHE (+ consistency), IAT (SC-MHE + image-aware KD)."""
        return {"MHE": self.iat_config(sc_weight=0.0, iakd_weight=0.0),
                "SC-MHE": self.iat_config(iakd_weight=0.0),
                "IAT (SC-MHE + IAKD)": self.iat_config()}


@dataclass(frozen=True)
class TAINotebookConfig(_RunsMixin, _EvalKnobs, ReleasedKnobs, SelectionKnobs, AdaptationKnobs, TAIKnobs, IATKnobs,
                        FinetuneKnobs, BaseConfig):
    """04_tai: TAI and TIMA trained beside the baselines, evaluated at eval_eps_list."""

    eval_eps_list: list[float] = knob([1.0, 4.0], "evaluation radii in 1/255 units (clean is always added)")
    baselines: list[str] = knob(["tecoa", "pmg_aft"], "engine methods trained beside TAI")
    with_iat: bool = knob(True, "also train TIMA (IAT text tuning, then TAI on it)")
    with_prompts: bool = knob(True, "also train the visual-prompt variants (CLIP frozen) of TeCoA, PMG-AFT and TIMA among the compared methods")

    def compared_models(self) -> list[str]:
        """The models 04 compares: zero-shot CLIP, the baselines, TAI, TIMA, then the prompted variants."""
        names = ["zero_shot", *self.baselines, "tai", *(["tima"] if self.with_iat else [])]
        prompted = [f"{n}_vp" for n in names if f"{n}_vp" in methods.model_names()] if self.with_prompts else []
        return names + prompted

    def check(self) -> None:
        super().check()
        self._eps("eval_eps_list")
        self._increasing("eval_eps_list")
        allowed = [m for m in methods.engine_names() if m != "tai"]
        bad = [m for m in self.baselines if m not in allowed]
        if bad:
            raise ConfigError(f"parameter 'baselines' has unknown method(s) {bad}; choose from {allowed}")


@dataclass(frozen=True)
class EvaluationConfig(StartKnobs, _RunsMixin, ReleasedKnobs, SelectionKnobs, AdaptationKnobs, BaselineKnobs, TAIKnobs, IATKnobs,
                       FinetuneKnobs, BaseConfig):
    """05_evaluation: models x datasets x attacks x eps, first-N, resumable."""

    models: list[str] = knob(["zero_shot", "ft_standard", "tecoa", "pmg_aft", "laat", "tai", "tima", "onehot_at", "coadv",
                              "tecoa_partial", "tecoa_vp", "pmg_aft_vp", "tima_vp"],
                             "models to evaluate: " + ", ".join(methods.model_names()))
    datasets: list[str] = knob([], "zero-shot datasets; empty means all of the profile")
    include_finetune_set: bool = knob(True, "also evaluate the fine-tuning set (marked not zero-shot)")
    eps_list: list[float] = knob([1.0, 2.0, 4.0, 8.0], "radii of the cheap attacks, 1/255 units (clean is always added)")
    attacks: list[str] = knob(["pgd10"], "attacks at every eps on n_samples images: " + ", ".join(ATTACKS))
    strong_attacks: list[str] = knob(["cw10", "pgd100", "aa"], "attacks on the first n_strong images at strong_eps_list")
    strong_eps_list: list[float] = knob([4.0], "radii of the strong attacks, 1/255 units")
    n_strong_datasets: int = knob(1, "strong attacks run on the first k evaluated datasets; 0 means all")
    n_samples: int = knob(128, "first-N test images per dataset")
    n_strong: int = knob(32, "first-N of the same images for the strong attacks")
    eps: float = knob(4.0, "large radius of findings 1 and 2 per model, 1/255 units")
    pgd_steps: int = knob(10, "PGD steps of the margin-offset measurements")
    large_eps: float = knob(32.0, "sanity check: accuracy at this radius must be about zero, 1/255 units")
    analysis_dataset: str = knob("", "dataset of the per-model findings; empty means the last zero-shot one")
    analysis_n: int = knob(256, "images for the per-model findings")
    rerun: bool = knob(False, "recompute cells already stored in results/05_evaluation.jsonl")
    fast_attacks: bool = knob(True, "same-math faster layers in the attacks (nbhelpers/fastpath.py)")
    sampling: str = knob("auto", 'paper: which n_samples images of each dataset: "random" (seeded, "auto"), "balanced" (class round-robin) or "first"; mini: "auto"')

    def check(self) -> None:
        super().check()
        self._choice("sampling", ["auto", *SAMPLING_RULES] if self.profile == "paper" else ["auto", "first"])
        bad = [m for m in self.models if m not in methods.model_names()]
        if bad or not self.models:
            raise ConfigError(f"parameter 'models' has unknown model(s) {bad}; choose from {methods.model_names()}")
        for name in ("attacks", "strong_attacks"):
            bad = [a for a in getattr(self, name) if a not in ATTACKS]
            if bad:
                raise ConfigError(f"parameter {name!r} has unknown attack(s) {bad}; choose from {list(ATTACKS)}")
        if not self.attacks and not self.strong_attacks:
            raise ConfigError("parameters 'attacks' and 'strong_attacks' are both empty: nothing to evaluate")
        for name in ("eps_list", "strong_eps_list"):
            self._eps(name)
            self._increasing(name, allow_empty=True)
            if 0.0 in getattr(self, name):
                raise ConfigError(f"parameter {name!r} must not contain 0 (clean is always added)")
        self._eps("eps")
        self._eps("large_eps")
        self._positive("n_samples", "n_strong", "large_eps", "analysis_n", "pgd_steps")
        self._non_negative("n_strong_datasets")
        self._datasets("datasets")
        if self.analysis_dataset:
            self._choice("analysis_dataset", valid_datasets(self.profile))
        if self.profile == "mini" and self.n_samples > world.TEST_POOL:
            raise ConfigError(f"parameter 'n_samples' must be <= {world.TEST_POOL} on the mini profile")
        if self.n_strong > self.n_samples:
            raise ConfigError(f"parameter 'n_strong' ({self.n_strong}) must be <= 'n_samples' ({self.n_samples}): "
                              "strong attacks run on the first n_strong of the same images")

    def eval_datasets(self) -> list[str]:
        """The zero-shot datasets to evaluate (all of the profile when the parameter is empty)."""
        return list(self.datasets) or valid_datasets(self.profile)

    def finetune_set(self) -> str:
        """The dataset the models are fine-tuned on (evaluated too, marked not zero-shot)."""
        return self.finetune_task()

    def sampling_rule(self) -> str:
        """The subset rule in force: "first" on mini, else the paper rule ("auto" = paper_data.DEFAULT_SAMPLING)."""
        if self.profile == "mini":
            return "first"
        return DEFAULT_SAMPLING if self.sampling == "auto" else self.sampling

    def grid_datasets(self) -> list[str]:
        """Zero-shot datasets to evaluate, then the fine-tuning set if include_finetune_set."""
        sets = [d for d in self.eval_datasets() if d != self.finetune_set()]
        return sets + [self.finetune_set()] if self.include_finetune_set else sets

    def strong_datasets(self) -> list[str]:
        """Datasets of the strong attacks: the first n_strong_datasets of grid_datasets (all if 0)."""
        sets = self.grid_datasets()
        return sets[:self.n_strong_datasets] if self.n_strong_datasets else sets


SCORE_DEFAULT_N = 1000  # images per dataset of the scoreboard's protocol


@dataclass(frozen=True)
class ScoreKnobs(Config):
    """The scoreboard's protocol (nbhelpers.score and notebook 08): every scored model is evaluated under it."""

    datasets: list[str] = knob([], "datasets to score on; empty means all of the profile (the 16 of the papers)")
    eps_list: list[float] = knob([1.0, 4.0], "attack radii, 1/255 units (clean is always added)")
    attacks: list[str] = knob(["pgd100", "aa"], "attacks at every eps on the same images: " + ", ".join(ATTACKS) + ", pgdN, aaN (reduced AutoAttack, N steps)")
    n_samples: int = knob(SCORE_DEFAULT_N, "images per dataset (paper: the seeded subset rule of 'sampling'; mini: the first N); every attack on the same images")
    bootstrap: int = knob(1000, "image-bootstrap resamples of every interval (95%, percentile, seeded)")
    gap_flag: float = knob(3.0, "flag a model whose PGD-minus-AutoAttack gap, averaged over its datasets, exceeds this many accuracy points at an eps (and whose 95% interval lies above 0)")
    rerun: bool = knob(False, "recompute cells already in the scoreboard's store")
    fast_attacks: bool = knob(True, "same-math faster layers in the attacks (nbhelpers/fastpath.py)")
    sampling: str = knob("auto", 'paper: which n_samples images of each dataset: "random" (seeded, "auto"), "balanced" (class round-robin) or "first"; mini: "auto"')

    def check(self) -> None:
        super().check()
        profile = getattr(self, "profile", "mini")
        self._choice("sampling", ["auto", *SAMPLING_RULES] if profile == "paper" else ["auto", "first"])
        bad = [a for a in self.attacks if a not in ATTACKS and not re.fullmatch(r"(pgd|aa)[1-9]\d*", a)]
        if bad or not self.attacks:
            raise ConfigError(f"parameter 'attacks' has unknown attack(s) {bad} or is empty; choose from "
                              f"{list(ATTACKS)}, pgdN or aaN (AutoAttack's APGD-CE + APGD-T with N steps: a reduced "
                              "version for quick checks, labelled so)")
        self._eps("eps_list")
        self._increasing("eps_list")
        if 0.0 in self.eps_list:
            raise ConfigError("parameter 'eps_list' must not contain 0 (clean is always added)")
        self._positive("n_samples", "bootstrap")
        self._non_negative("gap_flag")
        self._datasets("datasets")
        if profile == "mini" and self.n_samples > world.TEST_POOL:
            raise ConfigError(f"parameter 'n_samples' must be <= {world.TEST_POOL} on the mini profile")

    def eval_datasets(self) -> list[str]:
        """The datasets to score on (all of the profile when the parameter is empty)."""
        return list(self.datasets) or valid_datasets(getattr(self, "profile", "mini"))

    def sampling_rule(self) -> str:
        """The subset rule in force: "first" on mini, else the paper rule ("auto" = paper_data.DEFAULT_SAMPLING)."""
        if getattr(self, "profile", "mini") == "mini":
            return "first"
        return DEFAULT_SAMPLING if self.sampling == "auto" else self.sampling


@dataclass(frozen=True)
class ScoreConfig(ScoreKnobs, BaseConfig):
    """python -m nbhelpers.score: one weights file (checkpoint), scored under the scoreboard's protocol as `name`."""

    name: str = knob("", 'name of the scored model on the scoreboard, e.g. "TeCoA (released)"; one name, one sha256')

    def check(self) -> None:
        super().check()
        if not self.name.strip():
            raise ConfigError("parameter 'name' must name the scored model, e.g. --name \"TeCoA (released)\"")
        if not self.checkpoint:
            raise ConfigError("parameter 'checkpoint' must be the weights file to score (any format of "
                              "nbhelpers.checkpoints)")
        if not Path(self.checkpoint).expanduser().is_file():
            raise ConfigError(f"parameter 'checkpoint' = {self.checkpoint!r} is not a file; pass the weights file")


@dataclass(frozen=True)
class ScoreboardConfig(_RunsMixin, ReleasedKnobs, SelectionKnobs, AdaptationKnobs, BaselineKnobs, TAIKnobs, IATKnobs,
                       FinetuneKnobs, ScoreKnobs, BaseConfig):
    """08_scoreboard: the models this project trains (and any released checkpoints) scored under the scoreboard's
    protocol into its store, then every scored model of the store, one table per protocol."""

    models: list[str] = knob(["zero_shot", "tecoa", "pmg_aft", "fare", "tai", "tima"],
                             "models this project builds, scored beside the checkpoints: " + ", ".join(methods.model_names()))

    def check(self) -> None:
        super().check()
        bad = [m for m in self.models if m not in methods.model_names()]
        if bad:
            raise ConfigError(f"parameter 'models' has unknown model(s) {bad}; choose from {methods.model_names()}")


STUDY_STAGES = ("validation", "test", "strong", "ablation")


@dataclass(frozen=True)
class TIMAInputsConfig(_RunsMixin, TAIKnobs, IATKnobs, FinetuneKnobs, BaseConfig):
    """What TIMA's training run takes besides its own flags: the IAT text projection and the margin offset (the
    command line python -m nbhelpers.suite; the same knobs give the same projection and offset as 04)."""


@dataclass(frozen=True)
class StudyConfig(StartKnobs, _RunsMixin, TAIKnobs, IATKnobs, FinetuneKnobs, BaseConfig):
    """06_study: selection on validation tasks, seeds with intervals, a strong-attack check, TIMA's ablations."""

    rerun: bool = knob(False, "compute what results/06_study.jsonl lacks for this code (resumes); False: render it")
    stages: list[str] = knob(list(STUDY_STAGES), "stages to compute when rerun: validation, test, strong, ablation")
    train_seeds: list[int] = knob([0, 1, 2], "training seeds of the selected models (the first one selects)")
    val_images: int = knob(512, "first-N images per validation task (selection)")
    test_images: int = knob(1024, "first-N test images per zero-shot task (selected models)")
    test_eps_list: list[float] = knob([1.0, 2.0, 4.0, 8.0], "PGD radii of the test stage, 1/255 units")
    pgd_steps: int = knob(10, "evaluation PGD steps (random start, step 1/255)")
    select_eps: float = knob(4.0, "radius of the selection score, 1/255 units")
    clean_tolerance: float = knob(0.01, "selection: clean accuracy within this of the best TeCoA's (fraction)")
    strong_methods: list[str] = knob(["tecoa", "pmg_aft", "pmg_aft_code", "laat", "fare", "tai", "tima"],
                                     "selected models checked with AutoAttack (TeCoA is the reference)")
    strong_seeds: list[int] = knob([0, 1, 2], "training seeds checked with AutoAttack")
    strong_images: int = knob(256, "first-N test images per task under AutoAttack (APGD-CE + APGD-T)")
    strong_eps: float = knob(4.0, "AutoAttack radius, 1/255 units")
    ablation_images: int = knob(256, "first-N test images per task for the ablations")
    ablation_eps_list: list[float] = knob([1.0, 4.0], "PGD radii of the ablation stage, 1/255 units")
    fast_attacks: bool = knob(True, "same-math faster layers in the evaluation attacks (nbhelpers/fastpath.py)")

    def check(self) -> None:
        super().check()
        bad = [s for s in self.stages if s not in STUDY_STAGES]
        if bad:
            raise ConfigError(f"parameter 'stages' has unknown stage(s) {bad}; choose from {list(STUDY_STAGES)}")
        if not self.train_seeds or len(set(self.train_seeds)) != len(self.train_seeds) or min(self.train_seeds) < 0:
            raise ConfigError(f"parameter 'train_seeds' must be distinct seeds >= 0, got {list(self.train_seeds)}")
        bad = [s for s in self.strong_seeds if s not in self.train_seeds]
        if bad:
            raise ConfigError(f"parameter 'strong_seeds' {bad} must be among train_seeds {list(self.train_seeds)}")
        for name in ("test_eps_list", "ablation_eps_list"):
            self._eps(name)
            self._increasing(name)
        self._eps("select_eps")
        self._eps("strong_eps")
        self._positive("val_images", "test_images", "pgd_steps", "strong_images", "ablation_images", "select_eps",
                       "strong_eps")
        if not 0 <= self.clean_tolerance <= 1:
            raise ConfigError(f"parameter 'clean_tolerance' is a fraction in [0, 1], got {self.clean_tolerance}")
        if self.profile == "mini":
            for name in ("test_images", "strong_images", "ablation_images"):
                if getattr(self, name) > world.TEST_POOL:
                    raise ConfigError(f"parameter {name!r} must be <= {world.TEST_POOL} on the mini profile")
            if self.val_images > world.VAL_POOL:
                raise ConfigError(f"parameter 'val_images' must be <= {world.VAL_POOL} on the mini profile")
        elif self.finetune_task() != PAPER_FINETUNE_SET:
            raise ConfigError(f"parameter 'train_task' = {self.train_task!r}: the paper study fine-tunes on "
                              f"{PAPER_FINETUNE_SET}, whose held-out val split is one of its validation datasets "
                              "(docs/STUDY_PLAN.md); use 'auto'")

    def validation_datasets(self) -> list[str]:
        """Datasets that select configurations (never reported): the mini world's validation tasks; on paper the
        fine-tuning set's held-out val split (TinyImageNet) and paper_data's validation datasets (GTSRB, SVHN,
        FER2013, Country211)."""
        if self.profile == "mini":
            return list(world.VALIDATION_TASKS)
        return [self.finetune_task(), *list_validation_datasets()]

    def test_datasets(self) -> list[str]:
        """The reported datasets: the mini world's five zero-shot tasks, or the paper's 16 (TinyImageNet's val split
        among them, also a validation dataset: its test scores are not independent of the selection)."""
        return valid_datasets(self.profile)


@dataclass(frozen=True)
class LAATConfig(BaseConfig):
    """07_laat: LAAT in its own setting, a small backbone trained from scratch against frozen text anchors (2x2:
    anchor expansion x CE relaxation, several training seeds). Mini profile only."""

    train_seeds: list[int] = knob([0, 1, 2, 3, 4, 5], "training seeds; every arm trains one backbone per seed (six: with three, t over 2 degrees of freedom let a rerun on another CPU flip a verdict)")
    laat_steps: int = knob(400, "SGD steps per backbone (batch laat_batch_size)")
    laat_lr: float = knob(0.1, "peak SGD learning rate (momentum 0.9, warm-up 10 steps, cosine decay)")
    laat_batch_size: int = knob(64, "training batch size")
    laat_width: int = knob(16, "backbone width (channels of its first layer)")
    train_images: int = knob(8192, "first-N images of the fine-tuning task's training split (shared by all seeds)")
    laat_eps: float = knob(4.0, "training PGD radius in 1/255 units (LAAT: 8/255 on CIFAR; see the radius check)")
    laat_pgd_steps: int = knob(2, "training PGD steps")
    laat_alpha: float = knob(1.25, "training PGD step as a multiple of the radius")
    eps_ramp: float = knob(0.5, "fraction of the steps over which the training radius grows linearly from 0")
    spread: float = knob(1.5, "anchor expansion: factor on each anchor's angle from the anchors' centre")
    ce_weight: float = knob(1.0, "weight of the CE relaxation added to the cosine objective")
    ce_scale: float = knob(5.0, "scale s of the CE relaxation's logits s x cos (attacks and evaluation: the mini CLIP's)")
    probe_eps: list[float] = knob([8.0], "radius check: the cos + CE arm also trained at these radii (first seed); empty: skip")
    datasets: list[str] = knob([], "zero-shot datasets to evaluate; empty means all of the profile")
    n_samples: int = knob(256, "first-N test images per dataset")
    eps_list: list[float] = knob([1.0, 4.0], "evaluation PGD radii in 1/255 units, increasing; must contain claim_eps")
    pgd_steps: int = knob(10, "evaluation PGD steps (random start, step 1/255)")
    claim_eps: float = knob(4.0, "radius of the findings, 1/255 units")
    strong_images: int = knob(64, "APGD (APGD-CE + APGD-T) at claim_eps on the first N images (0: skip)")
    strong_datasets: list[str] = knob(["shapes", "patterns"], "datasets of the APGD check (first seed's backbones)")

    def check(self) -> None:
        super().check()
        if self.profile != "mini":
            raise ConfigError("07_laat runs on the mini profile only: it trains image backbones from scratch "
                              "against the mini CLIP's text anchors")
        self._positive("laat_steps", "laat_lr", "laat_batch_size", "laat_width", "train_images", "laat_pgd_steps",
                       "laat_alpha", "spread", "ce_scale", "n_samples", "pgd_steps")
        self._non_negative("eps_ramp", "ce_weight", "strong_images")
        for name in ("laat_eps", "probe_eps", "eps_list", "claim_eps"):
            self._eps(name)
        self._increasing("eps_list")
        self._datasets("datasets")
        self._datasets("strong_datasets")
        missing = sorted(set(self.strong_datasets) - set(self.eval_datasets()))
        if missing:
            raise ConfigError(f"parameter 'strong_datasets' has {missing}, which are not evaluated (datasets)")
        if len(self.train_seeds) < 2 or len(set(self.train_seeds)) != len(self.train_seeds):
            raise ConfigError(f"parameter 'train_seeds' needs at least two distinct seeds (intervals over seeds), "
                              f"got {list(self.train_seeds)}")
        if any(s < 0 for s in self.train_seeds):
            raise ConfigError("parameter 'train_seeds' must hold seeds >= 0")
        if self.claim_eps not in self.eps_list:
            raise ConfigError(f"parameter 'claim_eps' = {self.claim_eps} must be one of eps_list {list(self.eps_list)}")
        if self.laat_eps in self.probe_eps:
            raise ConfigError(f"parameter 'probe_eps' must not contain laat_eps = {self.laat_eps} (already trained)")
        if not 0 <= self.eps_ramp <= 1:
            raise ConfigError(f"parameter 'eps_ramp' is a fraction in [0, 1], got {self.eps_ramp}")
        if self.train_images > world.TRAIN_POOL or self.laat_batch_size > self.train_images:
            raise ConfigError(f"need laat_batch_size <= train_images <= {world.TRAIN_POOL}, got "
                              f"{self.laat_batch_size} and {self.train_images}")
        if self.n_samples > world.TEST_POOL or self.strong_images > self.n_samples:
            raise ConfigError(f"need strong_images <= n_samples <= {world.TEST_POOL}, got {self.strong_images} and "
                              f"{self.n_samples}")

    def eval_datasets(self) -> list[str]:
        """The datasets to evaluate (all zero-shot ones of the profile when the parameter is empty)."""
        return list(self.datasets) or valid_datasets(self.profile)


DISPATCH_MODES = ("none", "inline", "local", "slurm")
SLURM_GPU_FLAGS = ("gpus_per_node", "gpus_per_task", "gres")


@dataclass(frozen=True)
class DispatchConfig(Config):
    """How the CLIs of 05's grid and 06's study run their independent jobs (nbhelpers.dispatch): in this process
    as before, or as submitit jobs on this machine or on a Slurm cluster, each writing its own shard of rows."""

    dispatch: str = knob("none", '"none": in this process, as before; "inline": the jobs one after another in this process (through shards); "local": submitit worker processes on this machine; "slurm": a submitit Slurm job array')
    workers: int = knob(2, "local: worker processes, each a job with its share of the runs (with gpus: one worker per listed GPU)")
    gpus: list[int] = knob([], "local: GPU indices, one worker on each (its CUDA_VISIBLE_DEVICES); empty: CPU workers, which see no GPU")
    runs_per_job: int = knob(1, "slurm: runs (study) or models (grid) per array task")
    threads: int = knob(0, "torch threads in each job (0: torch's default, as a single-process run; the numbers equal a single-process run's at the same thread count)")
    job_minutes: int = knob(720, "wall-clock limit of each job, minutes (local and slurm)")
    job_folder: str = knob("", "submitit's pickles and logs (empty: <store>.jobs beside the store)")
    slurm_partition: str = knob("", "slurm: partition (empty: the cluster's default); checked with sinfo before submission")
    slurm_account: str = knob("", "slurm: account charged (sbatch --account; empty: your default account)")
    slurm_qos: str = knob("", "slurm: quality of service (sbatch --qos; empty: the default)")
    slurm_gpus_per_job: int = knob(1, "slurm: GPUs per array task (0: a CPU job)")
    slurm_gpu_flag: str = knob("gpus_per_node", 'slurm: how GPUs are asked for: "gpus_per_node" (--gpus-per-node), "gpus_per_task" (--gpus-per-task; one task per job, so the same count) or "gres" (--gres gpu:N, for clusters without GPU TRES)')
    slurm_cpus_per_task: int = knob(0, "slurm: CPUs per array task (0: the cluster's default)")
    slurm_mem_gb: float = knob(0.0, "slurm: memory per array task, GB (0: the cluster's default)")
    slurm_array_parallelism: int = knob(64, "slurm: array tasks running at once")
    slurm_setup: list[str] = knob([], "slurm: shell lines run before each task (module load, activating the environment)")
    slurm_requeue: bool = knob(True, "slurm: a preempted or failed-node task goes back to the queue (sbatch --requeue) and computes only the runs its shard lacks; False: --no-requeue")
    slurm_poll_seconds: float = knob(30.0, "slurm: seconds between looks at the array (squeue and the tasks' result files) while waiting")

    def check(self) -> None:
        super().check()
        self._choice("dispatch", DISPATCH_MODES)
        self._choice("slurm_gpu_flag", SLURM_GPU_FLAGS)
        self._positive("workers", "runs_per_job", "job_minutes", "slurm_array_parallelism", "slurm_poll_seconds")
        self._non_negative("threads", "slurm_gpus_per_job", "slurm_cpus_per_task", "slurm_mem_gb")
        if any(g < 0 for g in self.gpus) or len(set(self.gpus)) != len(self.gpus):
            raise ConfigError(f"parameter 'gpus' must be distinct GPU indices >= 0, got {list(self.gpus)}")
        if self.gpus and self.dispatch != "local":
            raise ConfigError(f"parameter 'gpus' is for dispatch 'local' (one worker per GPU), not {self.dispatch!r}")
        defaults = {k: tuple(v) if isinstance(v, list) else v for k, v in self.defaults().items()}
        given = [n for n in self.field_names() if n.startswith("slurm_") and getattr(self, n) != defaults[n]]
        if self.runs_per_job != 1 and self.dispatch != "slurm":
            given.append("runs_per_job")
        if given and self.dispatch != "slurm":
            raise ConfigError(f"parameter(s) {given} are for dispatch 'slurm', not {self.dispatch!r}")

    def n_workers(self) -> int:
        """Local worker processes: one per listed GPU, else `workers`."""
        return len(self.gpus) or self.workers


def parse_bool(text: str) -> bool:
    """A command-line bool: 'True'/'true'/'1'/'yes' or 'False'/'false'/'0'/'no'; anything else is an error."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "false", "0", "no"):
        return lowered in ("true", "1", "yes")
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def _shown(default: object) -> str:
    """A default as help text shows it (a Python literal: quoted strings, lists), '%' escaped for argparse."""
    return _literal(list(default) if isinstance(default, tuple) else default).replace("%", "%%")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that ends every flag's text with its default, '(default: ...)', unless the text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.required or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: {_shown(action.default)})"


def cli_parser(description: str, *, prog: str | None = None, usage: str | None = None) -> argparse.ArgumentParser:
    """The ArgumentParser of every command line of the project: its help shows each flag's default (usage: a short
    line for a CLI with dozens of flags, so that an error stays readable)."""
    return argparse.ArgumentParser(prog=prog, usage=usage, description=description,
                                   formatter_class=DefaultsHelpFormatter)


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type[Config], *,
                  skip: tuple[str, ...] = (), given_only: bool = False) -> None:
    """One command-line flag --<name> per field of cls, with its help and default (lists take several values).

    given_only: a flag left out is absent from the parsed namespace (its default is still shown in the help), so
    a CLI can tell the flags given from the defaults.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, default in cls.defaults().items():
        if name in skip:
            continue
        hint = hints[name]
        text = fields[name].metadata.get("help", "").replace("%", "%%")
        kw: dict[str, object] = {"default": default, "help": text}
        if given_only:
            kw = {"default": argparse.SUPPRESS, "help": f"{text} (default: {_shown(default)})"}
        if typing.get_origin(hint) in (list, tuple):
            (inner, *_) = typing.get_args(hint) or (str,)
            parser.add_argument(f"--{name}", nargs="*", type=inner, **kw)
        else:
            parser.add_argument(f"--{name}", type=parse_bool if hint is bool else hint, **kw)


def config_or_exit(parser: argparse.ArgumentParser, cls: type[Config], params: Mapping[str, object]) -> Config:
    """cls built from params; a ConfigError ends the command line as a usage error (exit 2) naming what to pass."""
    try:
        return cls.from_params(**params)
    except ConfigError as err:
        parser.error(str(err))


NOTEBOOK_CONFIGS: dict[str, type[BaseConfig]] = {
    "00_mini_world": MiniWorldConfig,
    "01_margin_offset": MarginOffsetConfig,
    "02_margin_vs_similarity": AnalysisConfig,
    "03_iat": IATNotebookConfig,
    "04_tai": TAINotebookConfig,
    "05_evaluation": EvaluationConfig,
    "06_study": StudyConfig,
    "07_laat": LAATConfig,
}


def _literal(value: object) -> str:
    """Python source of a default as papermill reads it (double-quoted strings, as JSON for lists of them)."""
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, (str, float, int)) and
                                                                 not isinstance(v, bool) for v in value)):
        return json.dumps(value)
    return repr(value)


_GROUPS = (("the backbone, data and device", BaseConfig), ("fine-tuning recipe (shared by 03-05 and the training CLI)",
           FinetuneKnobs), ("IAT, TIMA's text module (shared by 03-05)", IATKnobs),
           ("TAI, TIMA's image module (shared by 04, 05 and the training CLI)", TAIKnobs),
           ("TeCoA's motivating baselines (05 and the training CLI)", BaselineKnobs),
           ("visual prompts, TeCoA's second adaptation (05 and the training CLI)", AdaptationKnobs))


def parameters_cell(cls: type[Config]) -> str:
    """The source of a notebook's papermill `parameters` cell: `name: type = value  # help`, one per field;
    profile first, then the notebook's own parameters, then each shared knob set under a comment line."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    shared = {title: [f.name for f in dataclasses.fields(group) if f.name in fields]
              for title, group in _GROUPS if issubclass(cls, group)}
    taken = {name for names in shared.values() for name in names}
    own = [name for name in fields if name not in taken]

    def line(name: str) -> str:
        f, hint = fields[name], hints[name]
        type_name = "list" if typing.get_origin(hint) in (list, tuple) else _type_name(hint)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        return f"{name}: {type_name} = {_literal(default)}  # {f.metadata.get('help', '')}"

    base = shared.pop(_GROUPS[0][0])
    lines = [line("profile"), *map(line, own)]
    for title, names in shared.items():
        lines += [f"# --- {title}", *map(line, names)]
    lines += [f"# --- {_GROUPS[0][0]}", *(line(n) for n in base if n != "profile")]
    return "\n".join(lines)
