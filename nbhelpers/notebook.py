"""Set-up and loading steps that every notebook shares (kept here so notebook cells stay one-line calls)."""
from __future__ import annotations

import platform
from dataclasses import dataclass

import torch

from nbhelpers import __version__, data, models, plots, utils
from nbhelpers.config import BaseConfig
from nbhelpers.zeroshot import ZeroShotClassifier, build_class_embeddings, model_fingerprint


def setup(cfg: BaseConfig) -> torch.device:
    """Seed, pick the device, apply the figure style and print the versions that matter; returns the device."""
    import open_clip
    import torchvision

    utils.seed_everything(cfg.seed)
    device = utils.select_device(cfg.device)
    plots.use_style()
    print(f"python {platform.python_version()} | torch {torch.__version__} | torchvision {torchvision.__version__} "
          f"| open_clip {open_clip.__version__} | nbhelpers {__version__} ({utils.code_version()})")
    print(f"device {device} | threads {torch.get_num_threads()} | seed {cfg.seed} | profile {cfg.profile}")
    return device


@dataclass
class ZeroShotSetup:
    """A loaded model, its zero-shot head on one dataset, that dataset, and the model's identity."""

    model: models.ClipModel
    head: ZeroShotClassifier
    data: data.EvalSet
    model_name: str
    fingerprint: str


def load_zero_shot(cfg: BaseConfig, device: torch.device, *, dataset: str, n: int,
                   progress: bool = True) -> ZeroShotSetup:
    """Model of the profile (committed/trained mini CLIP or ViT-B-32), first-n test set and its zero-shot head."""
    model, preprocess = models.create_model_and_transforms(cfg.profile, checkpoint=cfg.checkpoint or None,
                                                           device=device)
    evalset = data.load_eval_set(cfg.profile, dataset, n=n, seed=cfg.seed, data_root=cfg.data_root,
                                 preprocess=preprocess, progress=progress)
    emb = build_class_embeddings(model, evalset.classnames, evalset.templates, device=device)
    head = ZeroShotClassifier(model, emb, classnames=evalset.classnames).to(device)
    name = model.model_name + (f":{cfg.checkpoint}" if cfg.checkpoint else ":default")
    return ZeroShotSetup(model, head, evalset, name, model_fingerprint(model))
