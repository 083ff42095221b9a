"""Evaluation data for both profiles as in-memory tensors: images in [0, 1] (N, 3, S, S), labels (N,).

mini: the world's zero-shot tasks (first-N of a fixed test pool). paper: the 16 datasets of TeCoA/PMG-AFT
from a local data root (:mod:`nbhelpers.paper_data`), first N samples in the dataset's order.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from nbhelpers import paths, world


@dataclass(frozen=True)
class EvalSet:
    """A labelled evaluation set with its zero-shot prompt metadata."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classnames: list[str]
    templates: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def load_eval_set(profile: str, dataset: str, *, n: int, seed: int = 0, data_root: str | os.PathLike = "",
                  preprocess: Callable | None = None, progress: bool = False) -> EvalSet:
    """First n test samples of a dataset of the profile, as tensors, with class names and templates."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if profile == "mini":
        images, labels = world.generate_task(dataset, n, seed=seed, split="test")
        return EvalSet(dataset, images, labels, world.TASKS[dataset].classnames(), [world.PROMPT_TEMPLATE])
    if profile != "paper":
        raise ValueError(f"unknown profile {profile!r}; choose 'mini' or 'paper'")
    from nbhelpers import paper_data

    ds, classnames = paper_data.load_paper_dataset(dataset, root=data_root or paths.DATA_ROOT, transform=preprocess)
    n = min(n, len(ds))
    items = [ds[i] for i in tqdm(range(n), desc=f"load {dataset}", disable=not progress)]
    images = torch.stack([x for x, _ in items])
    labels = torch.tensor([int(y) for _, y in items], dtype=torch.int64)
    return EvalSet(dataset, images, labels, classnames, [paper_data.TEMPLATE])


def classnames_for(profile: str, dataset: str, *, data_root: str | os.PathLike = "") -> tuple[list[str], list[str]]:
    """(class names, templates) of a dataset without loading its images."""
    if profile == "mini":
        return world.TASKS[dataset].classnames(), [world.PROMPT_TEMPLATE]
    from nbhelpers import paper_data

    return paper_data.get_classnames(dataset, root=data_root or paths.DATA_ROOT), [paper_data.TEMPLATE]
