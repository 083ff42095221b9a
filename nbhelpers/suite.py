"""The models that 04_tai and 05_evaluation compare: their fine-tuning configs, text sides, and trained weights.

Both notebooks build their runs here, from the same config fields, so a model trained by 04 is found in the
cache by 05 (the cache key is the full FinetuneConfig). Each evaluated model is an image tower paired with the
text side it was trained against: original class embeddings, IAT-tuned ones (TIMA), or LAAT-expanded anchors.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import torch

from nbhelpers import losses, text_tuning, training
from nbhelpers.config import EVAL_MODELS, EvaluationConfig, TAINotebookConfig
from nbhelpers.evaluation import EvalModel, text_embedder
from nbhelpers.models import ClipModel, create_model_and_transforms, preprocess_for
from nbhelpers.utils import file_fingerprint

# bump with any change to the numbers this module computes (see utils.numerics_versions)
NUMERICS_VERSION = 1

RunsConfig = TAINotebookConfig | EvaluationConfig  # the notebook configs that carry every knob set

NEEDS_OFFSET = {"tai", "tima"}
NEEDS_IAT = {"tima", "iat_tecoa"}


def _check_names(names: list[str]) -> None:
    """Refuse unknown model names before any work."""
    unknown = [n for n in names if n not in EVAL_MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {sorted(EVAL_MODELS)}")


def margin_offset_for(cfg: RunsConfig, base: ClipModel, *, preprocess: Callable | None = None,
                      device: torch.device | str) -> dict[str, float]:
    """The 01 margin offset between train_eps and cfg.offset_eps on the fine-tuning task (calibrates ASAM).

    preprocess: how the paper profile reads the fine-tuning images (None: the one that goes with base).
    """
    return training.measure_margin_offset(base, cfg.finetune_config("tai"), eps_large=cfg.offset_eps,
                                          preprocess=preprocess if preprocess is not None else preprocess_for(base),
                                          device=device)


def iat_projection_for(cfg: RunsConfig, base: ClipModel, *, preprocess: Callable | None = None,
                       device: torch.device | str, progress: bool = True, **overrides: object) -> Path:
    """Path of the IAT text projection (tuned on the fine-tuning task once, then cached by config).

    preprocess: how the paper profile reads the fine-tuning images (None: the one that goes with base);
    overrides: IAT knobs or train_seed changed from cfg's (the study's configurations and ablations).
    """
    iat_cfg = cfg.iat_config(**overrides)
    train = training.TrainData(cfg.finetune_config("tai", train_seed=iat_cfg.train_seed),
                               preprocess=preprocess if preprocess is not None else preprocess_for(base))
    images = train.first_images(iat_cfg.iat_images)
    path, _ = text_tuning.load_or_tune_projection(base, iat_cfg, classnames=train.classnames,
                                                  templates=train.templates, images=images, device=device,
                                                  progress=progress)
    return path


def finetune_configs(cfg: RunsConfig, names: list[str], *, margin_offset: float = 0.0,
                     iat_path: str | Path = "") -> dict[str, training.FinetuneConfig]:
    """FinetuneConfig of each fine-tuned model in names (zero_shot has none)."""
    _check_names(names)
    if NEEDS_IAT & set(names) and not iat_path:
        raise ValueError(f"models {sorted(NEEDS_IAT & set(names))} need an IAT projection (iat_path)")
    out = {}
    for name in names:
        if name == "zero_shot":
            continue
        if name == "tai":
            out[name] = cfg.finetune_config("tai", margin_offset=margin_offset)
        elif name == "tima":
            out[name] = cfg.finetune_config("tai", margin_offset=margin_offset, text_source="iat",
                                            iat_projection=str(iat_path))
        elif name == "iat_tecoa":  # TIMA without TAI: TeCoA trained against the IAT-tuned text
            out[name] = cfg.finetune_config("tecoa", text_source="iat", iat_projection=str(iat_path))
        else:
            out[name] = cfg.finetune_config(name)
    return out


def released_name(label: str) -> str:
    """The model name (store key) of a released checkpoint labelled `label` in the 'checkpoints' parameter."""
    return f"released:{label}"


def released_models(cfg: RunsConfig, *, device: torch.device | str = "cpu") -> dict[str, EvalModel]:
    """The released checkpoints of cfg ('checkpoints': {label: file}) as EvalModels beside ours: each file loaded
    by create_model_and_transforms as the base would be (any format of nbhelpers.checkpoints; an image-tower file on
    top of cfg.pretrained), with the original text side, tagged with its file's sha256 and detected format."""
    out: dict[str, EvalModel] = {}
    for label, path in cfg.released_checkpoints().items():
        model, _ = create_model_and_transforms(**{**cfg.model_spec(), "checkpoint": path}, device=device)
        report = getattr(model, "load_report", None)  # paper profile: what was read, and how (mini: one format)
        formats = [f["format"] for f in report.files if f["role"] == "checkpoint"] if report else ["mini CLIP"]
        tags = {"model_config": "released", "checkpoint_sha256": file_fingerprint(path),
                "checkpoint_format": ", ".join(formats) or "unknown"}
        out[released_name(label)] = EvalModel(released_name(label), label, model, text_embedder(model, device=device),
                                              "original", tags=tags)
    return out


def prepare_models(cfg: RunsConfig, names: list[str], *, base: ClipModel, preprocess: Callable | None = None,
                   device: torch.device | str = "cpu", margin_offset: dict | None = None,
                   progress: bool = True) -> tuple[dict[str, EvalModel], dict]:
    """Every named model ready for evaluation (trained on demand, else from the cache) and what was measured on the way.

    margin_offset: the result of margin_offset_for if already measured (else measured here when TAI needs it).
    Returns ({name: EvalModel}, {"margin_offset": dict or None, "iat_path": Path or None}).
    """
    _check_names(names)
    offset = margin_offset
    if offset is None and NEEDS_OFFSET & set(names):
        offset = margin_offset_for(cfg, base, device=device)
    iat_path = (iat_projection_for(cfg, base, preprocess=preprocess, device=device, progress=progress)
                if NEEDS_IAT & set(names) else None)
    configs = finetune_configs(cfg, names, margin_offset=offset["offset_cosine"] if offset else 0.0,
                               iat_path=iat_path or "")
    original = text_embedder(base, device=device)
    iat_text = text_embedder(training.with_iat_projection(base, iat_path), device=device) if iat_path else None
    models: dict[str, EvalModel] = {}
    for name in names:
        if name == "zero_shot":
            models[name] = EvalModel(name, EVAL_MODELS[name], base, original, "original")
            continue
        run = training.load_or_finetune(configs[name], device=device, progress=progress)
        if name in NEEDS_IAT:
            embed, side = iat_text, "iat"
        elif name == "laat":
            expand = functools.partial(losses.laat_expand, spread=configs[name].laat_spread)
            embed, side = text_embedder(base, transform=expand, device=device), "laat_expanded"
        else:
            embed, side = original, "original"
        models[name] = EvalModel(name, EVAL_MODELS[name], run.model, embed, side, run)
    return models, {"margin_offset": offset, "iat_path": iat_path}
