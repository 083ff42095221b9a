"""Flat, typed, validated, frozen configs (one per notebook), built from the papermill parameters.

Every field is checked against its annotation (an int is accepted for a float; a bool is never a number)
and then against its allowed values, so a wrong ``papermill -p`` value stops the notebook in its validation
cell, before any work and before anything is written, with a message naming the parameter and what it accepts.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

from nbhelpers import world
from nbhelpers.models import PROFILES

MAX_EPS = 64.0  # in 1/255 units; anything larger is almost surely a unit mistake (pixels vs /255)


class ConfigError(ValueError):
    """A notebook parameter has the wrong type or value."""


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
    """Zero-shot evaluation datasets of a profile."""
    if profile == "mini":
        return list(world.ZERO_SHOT_TASKS)
    from nbhelpers.paper_data import list_paper_datasets

    return list_paper_datasets()


@dataclass(frozen=True)
class BaseConfig:
    """Parameters every notebook has."""

    profile: str = "mini"
    seed: int = 0
    device: str = "auto"
    batch_size: int = 256
    checkpoint: str = ""
    data_root: str = ""

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
        """Value checks; subclasses extend with super().check()."""
        self._choice("profile", sorted(PROFILES))
        if self.seed < 0:
            raise ConfigError(f"parameter 'seed' must be >= 0, got {self.seed}")
        if self.batch_size < 1:
            raise ConfigError(f"parameter 'batch_size' must be >= 1, got {self.batch_size}")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ConfigError(f"parameter 'device' must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")

    def _choice(self, name: str, allowed: list[str]) -> None:
        value = getattr(self, name)
        if value not in allowed:
            raise ConfigError(f"parameter {name!r} = {value!r} is not allowed; choose one of {allowed}")

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

    @classmethod
    def from_params(cls, **params: object) -> "BaseConfig":
        """Build from a dict of notebook parameters; unknown names are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise ConfigError(f"unknown parameter(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
        return cls(**params)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        """Plain dict (lists for tuples), for result rows and cache keys."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class AnalysisConfig(BaseConfig):
    """Parameters of 02_margin_vs_similarity (and the base of 01's)."""

    dataset: str = "objects"
    eps: float = 4.0
    n_samples: int = 1024
    pgd_steps: int = 10
    attack_loss: str = "ce"

    def check(self) -> None:
        super().check()
        self._choice("dataset", valid_datasets(self.profile))
        self._eps("eps")
        self._positive("n_samples", "pgd_steps")
        if self.profile == "mini" and self.n_samples > world.TEST_POOL:
            raise ConfigError(f"parameter 'n_samples' must be <= {world.TEST_POOL} on the mini profile "
                              f"(the size of each test set), got {self.n_samples}")
        self._choice("attack_loss", ["ce", "cw"])


@dataclass(frozen=True)
class MarginOffsetConfig(AnalysisConfig):
    """Parameters of 01_margin_offset: eps is the large radius compared with the smallest of eps_list."""

    eps_list: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0])

    def check(self) -> None:
        super().check()
        self._eps("eps_list")
        if len(self.eps_list) < 2:
            raise ConfigError("parameter 'eps_list' must name at least two eps (1/255 units) to compare")
        if list(self.eps_list) != sorted(set(self.eps_list)):
            raise ConfigError(f"parameter 'eps_list' must be strictly increasing, got {list(self.eps_list)}")
        if self.eps not in self.eps_list or self.eps == self.eps_list[0]:
            raise ConfigError(f"parameter 'eps' = {self.eps} must be one of eps_list {list(self.eps_list)} "
                              "other than the smallest (it is the large radius of the headline comparison)")


@dataclass(frozen=True)
class MiniWorldConfig(BaseConfig):
    """Parameters of 00_mini_world (the embedded default only)."""

    n_samples: int = 512
    eps_list: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 4.0, 8.0])
    pgd_steps: int = 10
    n_gallery: int = 18

    def check(self) -> None:
        super().check()
        self._choice("profile", ["mini"])
        self._positive("n_samples", "pgd_steps", "n_gallery")
        self._eps("eps_list")
        if list(self.eps_list) != sorted(set(self.eps_list)) or 0.0 not in self.eps_list or 4.0 not in self.eps_list:
            raise ConfigError("parameter 'eps_list' must be strictly increasing and contain 0 (clean) and 4 "
                              f"(the fragility target), got {list(self.eps_list)}")
        if self.n_samples > world.TEST_POOL:
            raise ConfigError(f"parameter 'n_samples' must be <= {world.TEST_POOL}, got {self.n_samples}")


def _datasets_ok(cfg: BaseConfig, name: str) -> None:
    allowed = valid_datasets(cfg.profile)
    bad = [d for d in getattr(cfg, name) if d not in allowed]
    if bad:
        raise ConfigError(f"parameter {name!r} has unknown dataset(s) {bad}; choose from {allowed} (empty: all)")


@dataclass(frozen=True)
class MethodsConfig(BaseConfig):
    """Shared parameters of 03_iat and 04_tai: evaluation, and the adversarial fine-tuning they pair with."""

    eps: float = 4.0
    n_samples: int = 512
    pgd_steps: int = 10
    datasets: list[str] = field(default_factory=list)
    finetune_steps: int = 200
    finetune_lr: float = 0.001
    train_eps: float = 1.0

    def check(self) -> None:
        super().check()
        self._eps("eps")
        self._eps("train_eps")
        self._positive("n_samples", "pgd_steps", "finetune_steps", "finetune_lr")
        _datasets_ok(self, "datasets")
        if self.profile == "mini" and self.n_samples > world.TEST_POOL:
            raise ConfigError(f"parameter 'n_samples' must be <= {world.TEST_POOL} on the mini profile")

    def eval_datasets(self) -> list[str]:
        """The datasets to evaluate (all zero-shot ones of the profile when the parameter is empty)."""
        return list(self.datasets) or valid_datasets(self.profile)

    def finetune_config(self, method: str, **overrides: object):
        """The FinetuneConfig of `method` under these shared settings."""
        from nbhelpers.training import FinetuneConfig

        overrides.setdefault("train_task", world.FINETUNE_TASK if self.profile == "mini" else "tinyimagenet")
        return FinetuneConfig.from_params(profile=self.profile, seed=self.seed, device=self.device,
                                          batch_size=self.batch_size, checkpoint=self.checkpoint,
                                          data_root=self.data_root, method=method, steps=self.finetune_steps,
                                          lr=self.finetune_lr, train_eps=self.train_eps, **overrides)


@dataclass(frozen=True)
class IATNotebookConfig(MethodsConfig):
    """Parameters of 03_iat."""

    iat_steps: int = 150
    iat_lr: float = 0.002
    mhe_weight: float = 1.0
    mhe_power: float = 2.0
    mhe_bounded: bool = True
    sc_weight: float = 5.0
    kd_weight: float = 1.0
    laat_spread: float = 1.5

    def check(self) -> None:
        super().check()
        self._positive("iat_steps", "iat_lr", "mhe_power", "laat_spread")
        self._non_negative("mhe_weight", "sc_weight", "kd_weight")

    def iat_variants(self) -> dict:
        """IATConfig per text variant: MHE alone, SC-MHE (+ consistency), IAT (SC-MHE + image-aware KD)."""
        from nbhelpers.text_tuning import IATConfig

        common = dict(profile=self.profile, seed=self.seed, device=self.device, checkpoint=self.checkpoint,
                      data_root=self.data_root, steps=self.iat_steps, lr=self.iat_lr, mhe_weight=self.mhe_weight,
                      mhe_power=self.mhe_power, mhe_bounded=self.mhe_bounded)
        return {"MHE": IATConfig.from_params(**common, sc_weight=0.0, kd_weight=0.0),
                "SC-MHE": IATConfig.from_params(**common, sc_weight=self.sc_weight, kd_weight=0.0),
                "IAT (SC-MHE + IAKD)": IATConfig.from_params(**common, sc_weight=self.sc_weight,
                                                              kd_weight=self.kd_weight)}


@dataclass(frozen=True)
class TAIKnobsConfig(MethodsConfig):
    """MethodsConfig plus the knobs of TIMA's TAI module (shared by 04_tai and 05_evaluation, so they share trained models)."""

    margin_kind: str = "asam"
    asam_base: float = 0.0
    asam_gain: float = 0.05
    tam_threshold: float = 0.5
    tam_margin: float = 0.1
    offset_weight: float = 0.2
    takd_weight: float = 1.0

    def check(self) -> None:
        super().check()
        self._choice("margin_kind", ["asam", "tam", "none"])
        self._non_negative("asam_base", "asam_gain", "tam_margin", "offset_weight", "takd_weight")

    def tai_knobs(self, margin_offset: float) -> dict:
        """FinetuneConfig overrides of the TAI method, given the measured margin offset (cosine units)."""
        return dict(margin_kind=self.margin_kind, asam_base=self.asam_base, asam_gain=self.asam_gain,
                    tam_threshold=self.tam_threshold, tam_margin=self.tam_margin, offset_weight=self.offset_weight,
                    margin_offset=margin_offset, takd_weight=self.takd_weight)


@dataclass(frozen=True)
class TAINotebookConfig(TAIKnobsConfig):
    """Parameters of 04_tai."""

    eval_eps_list: list[float] = field(default_factory=lambda: [1.0, 4.0])
    baselines: list[str] = field(default_factory=lambda: ["tecoa", "pmg_aft"])
    with_iat: bool = True

    def check(self) -> None:
        super().check()
        self._eps("eval_eps_list")
        if list(self.eval_eps_list) != sorted(set(self.eval_eps_list)) or not self.eval_eps_list:
            raise ConfigError(f"parameter 'eval_eps_list' must be non-empty and increasing, got {self.eval_eps_list}")
        from nbhelpers.training import METHODS

        bad = [m for m in self.baselines if m not in METHODS or m == "tai"]
        if bad:
            raise ConfigError(f"parameter 'baselines' has unknown method(s) {bad}; choose from "
                              f"{sorted(set(METHODS) - {'tai'})}")


@dataclass(frozen=True)
class EvaluationConfig(TAIKnobsConfig):
    """Parameters of 05_evaluation: models x datasets x attacks x eps, first-N, resumable."""

    models: list[str] = field(default_factory=lambda: ["zero_shot", "ft_standard", "tecoa", "pmg_aft", "laat",
                                                       "tai", "tima"])
    eps_list: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0])
    attacks: list[str] = field(default_factory=lambda: ["pgd10"])
    strong_attacks: list[str] = field(default_factory=lambda: ["cw10", "pgd100", "aa"])
    strong_eps_list: list[float] = field(default_factory=lambda: [4.0])
    strong_datasets: list[str] = field(default_factory=list)
    n_strong: int = 32
    include_finetune_set: bool = True
    rerun: bool = False
    large_eps: float = 32.0
    analysis_dataset: str = ""
    analysis_n: int = 256
    fast_attacks: bool = True
    amp: bool = False

    def check(self) -> None:
        super().check()
        from nbhelpers.grid import ATTACKS
        from nbhelpers.suite import EVAL_MODELS

        bad = [m for m in self.models if m not in EVAL_MODELS]
        if bad or not self.models:
            raise ConfigError(f"parameter 'models' has unknown model(s) {bad}; choose from {sorted(EVAL_MODELS)}")
        for name in ("attacks", "strong_attacks"):
            bad = [a for a in getattr(self, name) if a not in ATTACKS]
            if bad:
                raise ConfigError(f"parameter {name!r} has unknown attack(s) {bad}; choose from {sorted(ATTACKS)}")
        if not self.attacks and not self.strong_attacks:
            raise ConfigError("parameters 'attacks' and 'strong_attacks' are both empty: nothing to evaluate")
        for name in ("eps_list", "strong_eps_list"):
            self._eps(name)
            values = list(getattr(self, name))
            if values != sorted(set(values)) or 0.0 in values:
                raise ConfigError(f"parameter {name!r} must be increasing, without 0 (clean is always added), "
                                  f"got {values}")
        self._eps("large_eps")
        self._positive("n_strong", "large_eps", "analysis_n")
        _datasets_ok(self, "strong_datasets")
        if self.analysis_dataset:
            self._choice("analysis_dataset", valid_datasets(self.profile))
        if self.n_strong > self.n_samples:
            raise ConfigError(f"parameter 'n_strong' ({self.n_strong}) must be <= 'n_samples' ({self.n_samples}): "
                              "strong attacks run on the first n_strong of the same images")

    def finetune_set(self) -> str:
        """The dataset the models are fine-tuned on (evaluated too, marked not zero-shot)."""
        return self.finetune_config("tecoa").train_task

    def grid_datasets(self) -> list[str]:
        """Zero-shot datasets to evaluate, then the fine-tuning set if include_finetune_set."""
        sets = [d for d in self.eval_datasets() if d != self.finetune_set()]
        return sets + [self.finetune_set()] if self.include_finetune_set else sets
