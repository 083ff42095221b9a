"""Set-up and loading steps that every notebook shares (kept here so notebook cells stay one-line calls).

Both profiles go through the same functions: ``mini`` reads the embedded world, ``paper`` the local datasets of
:mod:`nbhelpers.paper_data` under ``data_root`` through the model's preprocess.
"""
from __future__ import annotations

import json
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import open_clip
import pandas as pd
import torch
import torchvision

from nbhelpers import __version__, data, models, paper_data, paths, plots, utils, world
from nbhelpers.config import BaseConfig, MiniWorldConfig, finetune_set_for
from nbhelpers.zeroshot import ZeroShotClassifier, build_class_embeddings, build_head, model_fingerprint


class RandomWeightsWarning(UserWarning):
    """The notebook runs on randomly initialised weights (pretrained='none'): a smoke test, not a result."""


RANDOM_WEIGHTS_MESSAGE = ("pretrained='none': RANDOM WEIGHTS (random initialisation, chosen explicitly). The code "
                          "path is the real one, but every number, table and figure of this run is meaningless.")


def required_datasets(cfg: BaseConfig) -> list[tuple[str, str | None]]:
    """(dataset, split or None for its evaluation split) that a notebook config will read, in order, deduplicated."""
    needs: list[tuple[str, str | None]] = []
    if hasattr(cfg, "dataset"):  # 01, 02
        needs.append((cfg.dataset, None))
    if hasattr(cfg, "grid_datasets"):  # 05: the zero-shot sets and, if asked, the fine-tuning set
        needs += [(d, None) for d in cfg.grid_datasets()]
    elif hasattr(cfg, "eval_datasets"):  # 00, 03, 04
        needs += [(d, None) for d in cfg.eval_datasets()]
    elif hasattr(cfg, "validation_datasets"):  # 06: the validation datasets (selection), then the test datasets
        needs += [(d, None) for d in [*cfg.validation_datasets(), *cfg.test_datasets()]]
    if getattr(cfg, "analysis_dataset", ""):
        needs.append((cfg.analysis_dataset, None))
    if hasattr(cfg, "finetune_task"):  # 03-05 train on (and take IAT images from) the train split
        needs.append((cfg.finetune_task(), "train"))
    return list(dict.fromkeys(needs))


def check_paper_data(cfg: BaseConfig) -> None:
    """Paper profile: raise FileNotFoundError, before any work, naming every dataset the config needs that is not
    under data_root (with the paths and what to put there) and the datasets that are."""
    root = cfg.data_root or paths.DATA_ROOT
    problems = []
    for name, split in required_datasets(cfg):
        try:
            paper_data.check_dataset_files(name, root=root, split=split)
        except FileNotFoundError as exc:
            problems.append(f"- {exc}")
    if problems:
        present = paper_data.available_paper_datasets(root)
        raise FileNotFoundError(
            f"{len(problems)} dataset(s) this notebook reads are missing under data_root {str(root)!r}:\n"
            + "\n".join(problems) + f"\nPresent there: {present or 'none'}. Put the files in place, or restrict "
            "the parameters ('datasets' / 'dataset'; empty 'datasets' means all 16 of the paper) to those present.")


def setup(cfg: BaseConfig) -> torch.device:
    """Seed, pick the device, apply the figure style and print the versions that matter; returns the device.

    Paper profile: prints the data doctor's report (paper_data.diagnose_data_root) of the datasets the notebook
    reads and stops if one is missing or incomplete, before any work. Random weights
    (pretrained='none' without a checkpoint) are announced with a RandomWeightsWarning.
    """
    if cfg.profile == "paper":  # the data doctor on what this notebook reads, then the check that stops early
        root = cfg.data_root or paths.DATA_ROOT
        needed = list(dict.fromkeys(name for name, _ in required_datasets(cfg)))
        print(paper_data.format_data_report(paper_data.diagnose_data_root(root, datasets=needed), root=root))
        check_paper_data(cfg)
    utils.seed_everything(cfg.seed)
    device = utils.select_device(cfg.device)
    plots.use_style()
    print(f"python {platform.python_version()} | torch {torch.__version__} | torchvision {torchvision.__version__} "
          f"| open_clip {open_clip.__version__} | nbhelpers {__version__} ({utils.code_version()})")
    print(f"device {device} | threads {torch.get_num_threads()} | seed {cfg.seed} | profile {cfg.profile}")
    if cfg.pretrained == "none" and not cfg.checkpoint:
        print(f"WARNING: {RANDOM_WEIGHTS_MESSAGE}")
        warnings.warn(RANDOM_WEIGHTS_MESSAGE, RandomWeightsWarning, stacklevel=2)
    return device


@dataclass
class ZeroShotSetup:
    """A loaded model, its zero-shot head on one dataset, that dataset, and the model's identity."""

    model: models.ClipModel
    head: ZeroShotClassifier
    data: data.EvalSet
    model_name: str
    fingerprint: str


def weights_label(cfg: BaseConfig) -> str:
    """Short name of the configured weights: the checkpoint file, 'default' (mini's committed CLIP) or the tag."""
    if cfg.checkpoint:
        return cfg.checkpoint
    return "default" if cfg.profile == "mini" and cfg.pretrained == "auto" else cfg.pretrained


def load_zero_shot(cfg: BaseConfig, device: torch.device, *, dataset: str, n: int,
                   progress: bool = True) -> ZeroShotSetup:
    """The configured model (cfg.model_spec()), the first n test images of dataset and its zero-shot head."""
    model, preprocess = models.create_model_and_transforms(**cfg.model_spec(), device=device)
    evalset = data.load_eval_set(cfg.profile, dataset, n=n, seed=cfg.seed, data_root=cfg.data_root,
                                 preprocess=preprocess, progress=progress)
    emb = build_class_embeddings(model, evalset.classnames, evalset.templates, device=device)
    head = build_head(model, emb, classnames=evalset.classnames, device=device)
    return ZeroShotSetup(model, head, evalset, f"{model.model_name}:{weights_label(cfg)}", model_fingerprint(model))


# ------------------------------------------------------------------------------------------ 00 at both scales


def gallery(cfg: MiniWorldConfig) -> tuple[torch.Tensor, list[str]]:
    """Images (N, 3, S, S) in [0, 1] and captions to show: the mini world's image-caption pairs, or the first
    n_gallery test images of the first evaluated paper dataset captioned with their class names."""
    if cfg.profile == "mini":
        return world.generate_pairs(cfg.n_gallery, seed=cfg.seed)
    name = cfg.eval_datasets()[0]
    ev = data.load_eval_set(cfg.profile, name, n=cfg.n_gallery, seed=cfg.seed, data_root=cfg.data_root)
    return ev.images, [f"{name}: {ev.classnames[int(y)]}" for y in ev.labels]


def datasets_table(cfg: MiniWorldConfig) -> pd.DataFrame:
    """One row per dataset of the profile: task, classes, zero_shot, example classes, about (paper: also the
    torchvision reader, split, whether it is under data_root and whether this run evaluates it)."""
    if cfg.profile == "mini":
        return pd.DataFrame([{"task": t.name, "classes": len(t.classnames()), "zero_shot": t.zero_shot,
                              "example classes": ", ".join(t.classnames()[:3]), "about": t.description}
                             for t in world.TASKS.values()])
    root = cfg.data_root or paths.DATA_ROOT
    present = set(paper_data.available_paper_datasets(root))
    evaluated = set(cfg.eval_datasets()) | {finetune_set_for(cfg.profile)}
    rows = []
    for name in paper_data.list_paper_datasets():  # the reported datasets (06's validation ones are not shown)
        spec = paper_data.PAPER_DATASETS[name]
        names = paper_data.get_classnames(name, root=root) if name in present and name in evaluated else None
        rows.append({"task": name, "classes": len(names) if names is not None else None, "zero_shot": spec.zero_shot,
                     "example classes": ", ".join(names[:3]) if names is not None else "",
                     "about": f"torchvision {spec.torchvision_class}, split {spec.split!r}, <root>/{spec.subdir}",
                     "present": name in present, "evaluated": name in set(cfg.eval_datasets())})
    return pd.DataFrame(rows)


def model_card(cfg: BaseConfig, model: models.ClipModel) -> dict:
    """What the loaded weights are (printed: size and source). mini: the committed checkpoint's card fields;
    paper: architecture, tag, input size and the weights' identity (sha256 of the file, 'none' if random)."""
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    if cfg.profile == "mini":
        ckpt = Path(cfg.checkpoint) if cfg.checkpoint else paths.MINI_CHECKPOINT
        card_file = ckpt.with_suffix(".json")
        card = json.loads(card_file.read_text()) if card_file.exists() else {}
        source = "random init" if cfg.pretrained == "none" and not cfg.checkpoint else f"checkpoint {ckpt.name}"
        print(f"{n_params:.2f} M parameters; {source}")
        return {k: card.get(k) for k in ("command", "train_seconds", "hyperparameters", "sha256")}
    identity = models.weights_identity(**{k: v for k, v in cfg.model_spec().items() if k != "protocol"})
    print(f"{n_params:.2f} M parameters; open_clip {model.model_name} at {model.image_size} px; "
          f"weights {weights_label(cfg)}; protocol {model.protocol} (in-model resize {model.resize_mode})")
    if model.load_report is not None:  # what was loaded: format, sha256, which tower came from which file
        print(model.load_report)
    return {**identity, "image_size": model.image_size, "parameters_M": round(n_params, 2),
            "protocol": model.protocol, **({"load": model.load_report.to_dict()} if model.load_report else {})}
