"""The models that 04_tai and 05_evaluation compare: their fine-tuning configs, text sides, and trained weights.

Both notebooks build their runs here, from the same config fields, so a model trained by 04 is found in the
cache by 05 (the cache key is the full FinetuneConfig). Each evaluated model is an image tower paired with the
text side it was trained against: original class embeddings, IAT-tuned ones (TIMA), or LAAT-expanded anchors.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import torch

from nbhelpers import losses, methods, models, notebook, prompts, text_tuning, training, zeroshot
from nbhelpers.config import (EvaluationConfig, ScoreboardConfig, StudyConfig, TAINotebookConfig, TIMAInputsConfig,
                              add_arguments,
                              cli_parser, config_or_exit)
from nbhelpers.evaluation import EvalModel, text_embedder
from nbhelpers.models import ClipModel, create_model_and_transforms, preprocess_for, weights_identity
from nbhelpers.utils import content_key, file_fingerprint, numerics_versions, select_device

# bump with any change to the numbers this module computes (see utils.numerics_versions)
NUMERICS_VERSION = 1

RunsConfig = TAINotebookConfig | EvaluationConfig | StudyConfig | TIMAInputsConfig | ScoreboardConfig  # the configs with the run knobs


def check_names(names: list[str]) -> None:
    """Refuse unknown model names before any work."""
    unknown = [n for n in names if n not in methods.model_names()]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {methods.model_names()}")


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


def finetune_config_for(name: str, cfg: RunsConfig, *, margin_offset: float = 0.0, iat_path: str | Path = "",
                        **overrides: object) -> training.FinetuneConfig | None:
    """The FinetuneConfig that trains method `name`'s image tower under cfg's knobs with overrides (fine-tuning
    knobs, train_seed), from its record: its engine, the IAT text if it needs it, the margin offset if it takes
    one; None for a method that is not trained (zero_shot)."""
    method = methods.get(name)
    if not method.trained:
        return None
    if method.needs_iat and not iat_path:
        raise ValueError(f"model {name!r} needs an IAT projection (iat_path)")
    extra: dict[str, object] = {}
    if method.needs_iat:
        extra.update(text_source="iat", iat_projection=str(iat_path))
    if method.needs_offset:
        extra["margin_offset"] = margin_offset
    return cfg.finetune_config(method.engine, **{**overrides, **extra, **dict(method.fixed)})


def finetune_configs(cfg: RunsConfig, names: list[str], *, margin_offset: float = 0.0,
                     iat_path: str | Path = "") -> dict[str, training.FinetuneConfig]:
    """FinetuneConfig of each fine-tuned model in names (zero_shot has none)."""
    check_names(names)
    configs = {n: finetune_config_for(n, cfg, margin_offset=margin_offset, iat_path=iat_path) for n in names}
    return {n: c for n, c in configs.items() if c is not None}


def text_identity(cfg: RunsConfig, ft_cfg: training.FinetuneConfig | None) -> str:
    """What identifies a text side's class embeddings (never the computed floats): base weights, the IAT
    projection's content, the LAAT expansion, the numerics versions of the text path."""
    method = methods.get(ft_cfg.method) if ft_cfg is not None else None
    payload = {"base_weights": weights_identity(cfg.profile, model=cfg.model, pretrained=cfg.pretrained,
                                                checkpoint=cfg.checkpoint),
               "iat": file_fingerprint(ft_cfg.iat_projection) if ft_cfg is not None and ft_cfg.text_source == "iat"
               else "", "laat_spread": ft_cfg.laat_spread if method is not None and method.text == "laat_expanded"
               else None, "numerics": numerics_versions(zeroshot, losses, models)}
    return "text-" + content_key(payload)


def build_eval_model(name: str, cfg: RunsConfig, base: ClipModel, *, margin_offset: float = 0.0,
                     iat_path: str | Path = "", device: torch.device | str = "cpu", progress: bool = True,
                     **overrides: object) -> EvalModel:
    """The one builder of an evaluated model: method `name`'s image tower trained under cfg with overrides (or
    loaded from the cache; the pre-trained base for zero_shot), paired with the text side it trained against.

    iat_path: the IAT projection the method needs (iat_projection_for); margin_offset: cosine units (01's offset).
    The model carries identities (image_id: the training cache key; text_id: text_identity), never float hashes.
    """
    method = methods.get(name)
    ft_cfg = finetune_config_for(name, cfg, margin_offset=margin_offset, iat_path=iat_path, **overrides)
    if ft_cfg is None:
        image_model, run = base, None
        image_id = "base-" + content_key(weights_identity(cfg.profile, model=cfg.model, pretrained=cfg.pretrained,
                                                          checkpoint=cfg.checkpoint))
    else:
        run = training.load_or_finetune(ft_cfg, device=device, progress=progress)
        image_model, image_id = run.model, "finetune-" + training.cache_key(ft_cfg)
    if ft_cfg is None:
        embed, side, text_id = text_embedder(base, device=device), "original", text_identity(cfg, None)
    else:
        text_model, transform = training.text_side(ft_cfg, base)
        embed = text_embedder(text_model, transform=transform, device=device)
        side, text_id = method.text, text_identity(cfg, ft_cfg)
    return EvalModel(name, method.label, image_model, embed, side, run, image_id=image_id, text_id=text_id)


def with_original_text(model: EvalModel, cfg: RunsConfig, base: ClipModel, *,
                       device: torch.device | str = "cpu") -> EvalModel:
    """The same image tower scored against the base model's original text (the IAT variants' second reading)."""
    return dataclasses.replace(model, embed=text_embedder(base, device=device), text_side="original",
                               text_id=text_identity(cfg, None), tags=dict(model.tags))


def released_name(label: str) -> str:
    """The model name (store key) of a released checkpoint labelled `label` in the 'checkpoints' parameter."""
    return f"released:{label}"


def checkpoint_eval_model(label: str, model: ClipModel, path: str | Path, *, formats: list[str] | None = None,
                          device: torch.device | str = "cpu") -> EvalModel:
    """A model loaded from a weights file as an EvalModel with its own (original) text side, named
    released_name(label), tagged 'released' with the file's sha256 and detected format (from the model's load
    report when formats is None); identities from the sha256, so its cells are reused wherever the file is."""
    if formats is None:
        report = getattr(model, "load_report", None)  # paper profile: what was read, and how (mini: one format)
        formats = [f["format"] for f in report.files if f["role"] == "checkpoint"] if report else ["mini CLIP"]
    tags = {"model_config": "released", "checkpoint_sha256": file_fingerprint(path),
            "checkpoint_format": ", ".join(formats) or "unknown"}
    return EvalModel(released_name(label), label, model, text_embedder(model, device=device), "original", tags=tags,
                     image_id="checkpoint-" + tags["checkpoint_sha256"],
                     text_id="checkpoint-text-" + tags["checkpoint_sha256"])


def released_models(cfg: RunsConfig, *, device: torch.device | str = "cpu") -> dict[str, EvalModel]:
    """The released checkpoints of cfg ('checkpoints': {label: file}) as EvalModels beside ours: each file loaded
    by create_model_and_transforms as the base would be (any format of nbhelpers.checkpoints; an image-tower file on
    top of cfg.pretrained), with the original text side, tagged with its file's sha256 and detected format."""
    out: dict[str, EvalModel] = {}
    for label, path in cfg.released_checkpoints().items():
        formats = None
        if prompts.is_prompt_file(path):  # TeCoA's released visual prompts: on top of the base weights
            model, _ = create_model_and_transforms(**cfg.model_spec(), device=device)
            prompts.load_prompts(model, path)
            formats = ["TeCoA visual prompts"]
        else:
            model, _ = create_model_and_transforms(**{**cfg.model_spec(), "checkpoint": path}, device=device)
        out[released_name(label)] = checkpoint_eval_model(label, model, path, formats=formats, device=device)
    return out


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The TIMA inputs CLI's parser: one flag per TIMAInputsConfig field."""
    ap = cli_parser("TIMA's inputs for python -m nbhelpers.training: tune the IAT text projection (cached, as 03-05 "
                    "do) and measure the margin offset (cosine units, as 04 does) under the given knobs",
                    prog="python -m nbhelpers.suite", usage="%(prog)s [--FIELD VALUE ...]   (--help lists them)")
    add_arguments(ap, TIMAInputsConfig)
    return ap


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m nbhelpers.suite [knobs]: print {"iat_projection": path, "margin_offset": cosine offset}."""
    ap = build_parser()
    cfg = config_or_exit(ap, TIMAInputsConfig, vars(ap.parse_args(argv)))
    if cfg.profile == "paper":  # the fine-tuning set, checked before any work
        notebook.check_paper_data(cfg)
    device = select_device(cfg.device)
    base, preprocess = create_model_and_transforms(**cfg.model_spec(), device=device)
    path = iat_projection_for(cfg, base, preprocess=preprocess, device=device, progress=False)
    offset = margin_offset_for(cfg, base, preprocess=preprocess, device=device)
    print(json.dumps({"iat_projection": str(path), "margin_offset": round(offset["offset_cosine"], 6),
                      "margin_offset_logits": round(offset["offset_logits"], 6)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
