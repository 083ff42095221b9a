"""Evaluation data for both profiles as in-memory tensors: images in [0, 1] (N, 3, S, S), labels (N,).

mini: the world's zero-shot tasks (first-N of a fixed test pool). paper: the 16 datasets of TeCoA/PMG-AFT and
06's validation datasets from a local data root (:mod:`nbhelpers.paper_data`), a subset of n items drawn by a sampling rule of ours
(default: a seeded permutation fixed per dataset, :func:`nbhelpers.paper_data.subset_indices`), each read through
``preprocess`` (the model's: PIL -> float tensor (3, S, S) in [0, 1]).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from nbhelpers import models, paper_data, paths, world
from nbhelpers.utils import progress_bar

# bump with any change to the numbers this module computes (see utils.numerics_versions)
NUMERICS_VERSION = 1


@dataclass(frozen=True)
class EvalSet:
    """A labelled evaluation set with its zero-shot prompt metadata."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classnames: list[str]
    templates: list[str]
    sampling: str = "first"
    """How the items were chosen: "first" (mini: the first n of the seeded task pool; paper: dataset order) or a
    paper sampling rule of ours, "random" / "balanced" (see :func:`nbhelpers.paper_data.subset_indices`); followed
    by paper_data.PARTIAL_MARK ("+partial") when the split is smaller than its official size (allowed explicitly)."""
    indices: tuple[int, ...] = ()
    """Paper profile: the dataset indices of the items, in order (empty for mini)."""
    sample_seed: int | None = None
    """The seed of a seeded sampling rule (None for "first")."""
    protocol: str = "mini"
    """The evaluation protocol that made the tensors (paper_data.PROTOCOLS), or "custom" for a caller's preprocess
    that carries none."""

    def __len__(self) -> int:
        return len(self.labels)


def stack_items(items: list[tuple[object, int]], *, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(image tensor (3, S, S), label) dataset items -> images (N, 3, S, S) and labels (N,) int64; a clear error if a
    transform left PIL images or sizes differ (what: the dataset, for the message)."""
    if not items:
        raise ValueError(f"{what}: no items to stack")
    bad = {type(x).__name__ for x, _ in items if not isinstance(x, torch.Tensor)}
    if bad:
        raise TypeError(f"{what}: items are {sorted(bad)}, not tensors; pass the model's preprocess "
                        "(create_model_and_transforms(...)[1] or models.preprocess_for(model))")
    shapes = {tuple(x.shape) for x, _ in items}
    if len(shapes) != 1:
        raise ValueError(f"{what}: images of different shapes {sorted(shapes)}; the preprocess must resize and crop")
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items], dtype=torch.int64)


def load_eval_set(profile: str, dataset: str, *, n: int, seed: int = 0, data_root: str | os.PathLike = "",
                  preprocess: Callable | None = None, progress: bool = False, sampling: str | None = None,
                  sample_seed: int = 0) -> EvalSet:
    """n evaluation samples of a dataset of the profile (a mini validation task: its val split), as tensors, with
    class names, templates and the sampling rule used.

    mini: the first n of the task's seeded pool (``seed``), unchanged; ``sampling`` must be None or "first".
    paper: the first n of a fixed order of the dataset's test split chosen by ``sampling`` (a rule of ours; None
    means :data:`paper_data.DEFAULT_SAMPLING`, "random": a permutation seeded by ``sample_seed`` and the dataset
    name; "balanced": class round-robin; "first": dataset order), so a smaller n is a prefix of a larger one and
    the images do not depend on the run's ``seed``. ``preprocess`` should be the model's
    (``create_model_and_transforms(...)[1]``, a :class:`models.ProtocolPreprocess`: its transform for this dataset
    is used and its protocol recorded); None means the default protocol ('tecoa') at 224 px, the input of ViT-B/32
    and most CLIP backbones (the model resizes any other size to its own input); any other callable is used as it
    is, recorded as protocol "custom". The mini world ignores
    preprocess (its images are rendered at 32 px). A missing or incomplete dataset fails before any image is read,
    naming the expected files and where to get them.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if profile == "mini":  # validation tasks (selection only) render their own "val" split, never "test"
        if sampling not in (None, "first"):
            raise ValueError(f"sampling={sampling!r}: the mini profile's tasks are seeded draws already and take only "
                             "their first n (sampling None or 'first'); the sampling rules are for the paper profile")
        split = "val" if world.task_role(dataset) == "validation" else "test"
        images, labels = world.generate_task(dataset, n, seed=seed, split=split)
        return EvalSet(dataset, images, labels, world.task_spec(dataset).classnames(), [world.PROMPT_TEMPLATE])
    if profile != "paper":
        raise ValueError(f"unknown profile {profile!r}; choose 'mini' or 'paper'")
    rule = paper_data.check_sampling(paper_data.DEFAULT_SAMPLING if sampling is None else sampling)
    preprocess = preprocess if preprocess is not None else models.ProtocolPreprocess(paper_data.DEFAULT_PROTOCOL)
    if isinstance(preprocess, models.ProtocolPreprocess):
        transform, protocol = preprocess.for_dataset(dataset), preprocess.protocol
    else:
        transform, protocol = preprocess, "custom"
    ds, classnames = paper_data.load_paper_dataset(dataset, root=data_root or paths.DATA_ROOT, transform=transform)
    partial = paper_data.is_partial(dataset, ds, classnames)  # loaded only where partial data are allowed
    indices = paper_data.subset_indices(dataset, ds, n=n, sampling=rule, seed=sample_seed)
    items = [ds[i] for i in progress_bar(indices, desc=f"load {dataset}", disable=not progress)]
    images, labels = stack_items(items, what=dataset)
    names, templates = paper_data.text_for(dataset, protocol, classnames)  # the protocol's class text
    return EvalSet(dataset, images, labels, names, templates,
                   sampling=rule + (paper_data.PARTIAL_MARK if partial else ""),
                   indices=tuple(indices),
                   sample_seed=None if rule == "first" else sample_seed, protocol=protocol)


def classnames_for(profile: str, dataset: str, *, data_root: str | os.PathLike = "",
                   protocol: str = paper_data.DEFAULT_PROTOCOL) -> tuple[list[str], list[str]]:
    """(class names, templates) of a dataset without loading its images, as `protocol` scores it (its class phrases
    and templates: paper_data.text_for; the mini profile has one text)."""
    if profile == "mini":
        return world.task_spec(dataset).classnames(), [world.PROMPT_TEMPLATE]
    return paper_data.text_for(dataset, protocol, paper_data.get_classnames(dataset, root=data_root or paths.DATA_ROOT))
