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


def evaluate_pairs(pairs: dict[str, tuple[ClipModel, EmbeddingFn]], *, profile: str, datasets: list[str],
                   eps_list: list[float], n: int, steps: int = 10, batch_size: int = 256, seed: int = 0,
                   data_root: str = "", device: torch.device | str = "cpu", progress: bool = False) -> pd.DataFrame:
    """evaluate_pairing for named (image tower, text side) pairs: rows (model, dataset, eps, accuracy, ...)."""
    frames = []
    for name, (image_model, embed) in tqdm(pairs.items(), desc="models", disable=not progress):
        df = evaluate_pairing(image_model, embed, profile=profile, datasets=datasets, eps_list=eps_list, n=n,
                              steps=steps, batch_size=batch_size, seed=seed, data_root=data_root, device=device)
        frames.append(df.assign(model=name))
    return pd.concat(frames, ignore_index=True)[["model", "dataset", "eps", "accuracy", "margin_mean", "n"]]


def evaluate_grid(image_models: dict[str, ClipModel], text_sides: dict[str, EmbeddingFn], *, profile: str,
                  datasets: list[str], eps_list: list[float], n: int, steps: int = 10, batch_size: int = 256,
                  seed: int = 0, data_root: str = "", device: torch.device | str = "cpu",
                  progress: bool = False) -> pd.DataFrame:
    """Every (image tower, text side) combination: rows (image, text, dataset, eps, accuracy, ...)."""
    frames = []
    for image_name, model in tqdm(image_models.items(), desc="image towers", disable=not progress):
        pairs = {text_name: (model, embed) for text_name, embed in text_sides.items()}
        df = evaluate_pairs(pairs, profile=profile, datasets=datasets, eps_list=eps_list, n=n, steps=steps,
                            batch_size=batch_size, seed=seed, data_root=data_root, device=device)
        frames.append(df.rename(columns={"model": "text"}).assign(image=image_name))
    return pd.concat(frames, ignore_index=True)[["image", "text", "dataset", "eps", "accuracy", "margin_mean", "n"]]


def text_structure(text_sides: dict[str, EmbeddingFn], *, profile: str, datasets: list[str],
                   reference: str = "original", data_root: str = "") -> pd.DataFrame:
    """Per text side and dataset: inter-class distances and the Spearman consistency with the reference side."""
    from nbhelpers import analysis

    rows = []
    for name in datasets:
        classnames, templates = data_mod.classnames_for(profile, name, data_root=data_root)
        ref = text_sides[reference](classnames, templates)
        for side, embed in text_sides.items():
            emb = embed(classnames, templates)
            rows.append({"text": side, "dataset": name, **analysis.text_distance_stats(emb),
                         "consistency_rho": analysis.semantic_consistency_rho(ref, emb)})
    return pd.DataFrame(rows)
