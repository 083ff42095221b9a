"""IAT, Image-Aware Text tuning (TIMA's text module): spread the class text embeddings (MHE), keep their
semantic structure (SC term, AAAI's SC-MHE) and keep them agreeing with the pre-trained image embeddings (IAKD).

What is tuned (our decision, the paper does not say): the text projection matrix ``text_projection`` (width x D)
only. Per-class offsets would not transfer to the zero-shot datasets' unseen classes; a shared projection does,
and it leaves the text transformer and the whole image side untouched.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file

from nbhelpers import losses, models, paths
from nbhelpers.config import IATConfig
from nbhelpers.models import ClipModel, weights_identity
from nbhelpers.utils import atomic_path, code_version, content_key, numerics_versions, progress_bar

# bump with any change to the numbers this module computes (see utils.numerics_versions)
NUMERICS_VERSION = 1


@dataclass
class IATResult:
    """The text-tuned model (only text_projection differs from the base) and the loss history."""

    model: ClipModel
    history: pd.DataFrame
    seconds: float


def tune_text(base: ClipModel, cfg: IATConfig, *, classnames: list[str], templates: list[str],
              images: torch.Tensor, device: torch.device | str = "cpu", progress: bool = True) -> IATResult:
    """Tune a copy of base's text projection on the training classes; images (N, 3, S, S) in [0, 1] feed IAKD."""
    model = copy.deepcopy(base).to(device).eval()
    for name, p in model.named_parameters():
        p.requires_grad_(name == "clip.text_projection")
    tokens = model.tokenize([t.format(c) for c in classnames for t in templates], device=device)
    n_t = len(templates)
    with torch.no_grad():
        original = _class_mean(base.encode_text(tokens), n_t)
        img_emb = torch.cat([base.encode_image(images[i:i + 256].to(device)) for i in range(0, len(images), 256)])
    scale = base.logit_scale()
    opt = torch.optim.Adam([model.clip.text_projection], lr=cfg.iat_lr)
    rows = []
    t0 = time.time()
    for step in progress_bar(range(cfg.iat_steps), desc="IAT", disable=not progress, mininterval=2):
        tuned = _class_mean(model.encode_text(tokens), n_t)
        mhe = losses.mhe_energy(tuned, power=cfg.mhe_power, bounded=cfg.mhe_bounded)
        sc = losses.consistency_loss(tuned, original, kind=cfg.sc_kind, temperature=cfg.sc_temperature)
        kd = losses.image_aware_kd(img_emb, tuned, original, scale=scale, temperature=cfg.iakd_temperature)
        loss = cfg.mhe_weight * mhe + cfg.sc_weight * sc + cfg.iakd_weight * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rows.append({"step": step, "loss": loss.item(), "mhe": mhe.item(), "sc": sc.item(), "iakd": kd.item()})
    for p in model.parameters():
        p.requires_grad_(False)
    return IATResult(model.eval(), pd.DataFrame(rows), time.time() - t0)


def _class_mean(emb: torch.Tensor, n_templates: int) -> torch.Tensor:
    """(C * T, D) prompt embeddings -> (C, D) unit class embeddings."""
    return torch.nn.functional.normalize(emb.view(-1, n_templates, emb.shape[-1]).mean(1), dim=-1)


def save_projection(model: ClipModel, path: str | os.PathLike, *, config: dict) -> Path:
    """Write the tuned text projection to a safetensors file atomically (loaded by training.load_iat_projection)."""
    with atomic_path(path) as tmp:
        save_file({"text_projection": model.clip.text_projection.detach().cpu().contiguous()}, str(tmp),
                  metadata={"config": json.dumps(config), "code_version": code_version(),
                            "model_name": model.model_name})
    return Path(path)


def projection_key(cfg: IATConfig) -> str:
    """Key of a tuned projection: the IAT knobs, training set and seed, the base weights' content (sha256, not the
    checkpoint's path), and the numerics versions of this module and its losses."""
    knobs = cfg.key_payload()  # the checkpoint enters through its bytes (weights_identity), not its path
    payload = {**knobs, "numerics": numerics_versions(sys.modules[__name__], losses, models),
               "base_weights": weights_identity(cfg.profile, model=cfg.model, pretrained=cfg.pretrained,
                                                checkpoint=cfg.checkpoint)}
    return content_key(payload)


def default_projection_path(cfg: IATConfig) -> Path:
    """Cache path of an IAT config's text projection: cache/iat/<profile>-<key>.safetensors (03, 04 and 05 share it)."""
    return paths.CACHE_DIR / "iat" / f"{cfg.profile}-{projection_key(cfg)}.safetensors"


def load_or_tune_projection(base: ClipModel, cfg: IATConfig, *, classnames: list[str], templates: list[str],
                            images: torch.Tensor, device: torch.device | str = "cpu",
                            progress: bool = True) -> tuple[Path, IATResult | None]:
    """Path of the IAT text projection for cfg (cache keyed by the config), tuning it first if it is missing."""
    path = default_projection_path(cfg)
    if path.is_file():
        return path, None
    result = tune_text(base, cfg, classnames=classnames, templates=templates, images=images[:cfg.iat_images],
                       device=device, progress=progress)
    return save_projection(result.model, path, config=cfg.to_dict()), result
