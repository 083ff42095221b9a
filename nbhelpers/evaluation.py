"""Zero-shot evaluation of a (image tower, text side) pairing over datasets and eps, as tidy tables."""
from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from nbhelpers import data as data_mod
from nbhelpers import metrics
from nbhelpers.models import ClipModel
from nbhelpers.zeroshot import ZeroShotClassifier, build_class_embeddings

EmbeddingFn = Callable[[list[str], list[str]], torch.Tensor]


def text_embedder(text_model: ClipModel, *, transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  device: torch.device | str = "cpu") -> EmbeddingFn:
    """(classnames, templates) -> unit class embeddings (C, D) from text_model, optionally transformed (LAAT)."""
    def embed(classnames: list[str], templates: list[str]) -> torch.Tensor:
        emb = build_class_embeddings(text_model, classnames, templates, device=device)
        return transform(emb) if transform is not None else emb
    return embed


def evaluate_pairing(image_model: ClipModel, embed: EmbeddingFn, *, profile: str, datasets: list[str],
                     eps_list: list[float], n: int, steps: int = 10, batch_size: int = 256, seed: int = 0,
                     data_root: str = "", device: torch.device | str = "cpu", progress: bool = False) -> pd.DataFrame:
    """Rows (dataset, eps, accuracy, margin_mean, n) for the image tower scored against embed's class embeddings."""
    rows = []
    for name in tqdm(datasets, desc="datasets", disable=not progress, leave=False):
        ev = data_mod.load_eval_set(profile, name, n=n, seed=seed, data_root=data_root)
        head = ZeroShotClassifier(image_model, embed(ev.classnames, ev.templates).to(device),
                                  logit_scale=image_model.logit_scale()).to(device)
        for e in eps_list:
            logits = metrics.predict_logits(head, ev.images, ev.labels, eps=e / 255, steps=steps,
                                            batch_size=batch_size, device=device, seed=seed)
            rows.append({"dataset": name, "eps": e, "accuracy": metrics.accuracy(logits, ev.labels),
                         "margin_mean": float(metrics.logit_margin(logits, ev.labels).mean()), "n": len(ev)})
    return pd.DataFrame(rows)
