"""The one evaluation runner: zero-shot accuracy of (image tower, text side) models under attack, as tidy rows.

A cell is (dataset, model, attack, eps, n): the first n test images of the dataset, attacked by the named attack at
eps (1/255 units; attack 'clean' at eps 0 is the unattacked images) against the model's zero-shot head. Its row
holds the accuracy, the clean accuracy of the same images, the mean logit margin, the per-sample correctness (hex
of the packed bits, so any prefix of a larger run can be re-scored), n, the seconds it took, the model's identity
strings (``image_id``, ``text_id``: :class:`EvalModel`) and the image and text fingerprints. Notebooks 03 and 04
call :func:`evaluate`; 05's resumable store (:func:`nbhelpers.grid.run_grid`) runs the same function with its
lookup and store hooks. Images are first-N in the dataset's order and every cell
seeds its attack with ``seed``, so a small run is a prefix of a large one.

Attacks: the names of :data:`nbhelpers.attacks.ATTACKS` (pgd10, pgd100, cw10, aa, aa_full) and any ``pgdN`` /
``cwN`` (our PGD with N steps, cross-entropy or CW-margin loss, random start, step 1/255).
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from nbhelpers import analysis, methods, metrics, paper_data
from nbhelpers import attacks as attack_mod
from nbhelpers.attacks import ATTACKS, AttackSpec
from nbhelpers.data import EvalSet, classnames_for, load_eval_set
from nbhelpers.models import ClipModel
from nbhelpers.utils import pack_mask, progress_bar, tensor_fingerprint, unpack_mask
from nbhelpers.zeroshot import ZeroShotClassifier, build_class_embeddings, build_head, model_fingerprint

# bump with any change to the numbers this module computes (see utils.numerics_versions)
NUMERICS_VERSION = 1

EmbeddingFn = Callable[[list[str], list[str]], torch.Tensor]
CLEAN = AttackSpec("clean", "clean")
_STEPS_NAME = re.compile(r"^(pgd|cw)(\d+)$")


def text_embedder(text_model: ClipModel, *, transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  device: torch.device | str = "cpu") -> EmbeddingFn:
    """(classnames, templates) -> unit class embeddings (C, D) from text_model, optionally transformed (LAAT)."""
    def embed(classnames: list[str], templates: list[str]) -> torch.Tensor:
        emb = build_class_embeddings(text_model, classnames, templates, device=device)
        return transform(emb) if transform is not None else emb
    return embed


@dataclass
class EvalModel:
    """One evaluated model: an image tower, the text side it is scored against, and how it was made.

    embed: (classnames, templates) -> unit class embeddings (C, D). run: the training.FinetuneResult that made the
    image tower (None: not fine-tuned here). tags: extra columns of this model's rows (e.g. image and text side).
    image_id, text_id: identity strings of the image tower and of the text side, set by the code that builds the
    model from what made them (e.g. the training cache key), never from computed numbers; written on every row and
    what 05's store reuses cells by ("" = none: its rows are matched by their computed fingerprints).
    """

    name: str
    label: str
    image_model: ClipModel
    embed: EmbeddingFn
    text_side: str
    run: object | None = None
    tags: dict[str, str] = field(default_factory=dict)
    image_id: str = ""  # identity of the image tower's weights (e.g. the training cache key), never a float hash
    text_id: str = ""  # identity of the text side (base weights, IAT projection file, expansion), never a float hash


def zero_shot_model(base: ClipModel, *, device: torch.device | str = "cpu") -> EvalModel:
    """The pre-trained model with its own (original) text side, as an EvalModel named 'zero_shot'."""
    return EvalModel("zero_shot", methods.get("zero_shot").label, base, text_embedder(base, device=device), "original")


def pair_models(image_models: Mapping[str, ClipModel], text_sides: Mapping[str, EmbeddingFn]) -> dict[str, EvalModel]:
    """Every (image tower, text side) combination as an EvalModel named 'image | text', tagged image and text."""
    return {f"{i} | {t}": EvalModel(f"{i} | {t}", f"{i} | {t}", model, embed, t, tags={"image": i, "text": t})
            for i, model in image_models.items() for t, embed in text_sides.items()}


def resolve_attack(name: str) -> AttackSpec:
    """The AttackSpec of an attack name: 'clean', a name of attacks.ATTACKS, or pgdN / cwN (N steps)."""
    if name == "clean":
        return CLEAN
    if name in ATTACKS:
        return ATTACKS[name]
    match = _STEPS_NAME.match(name)
    if match is None or int(match[2]) < 1:
        raise ValueError(f"unknown attack {name!r}; choose from {sorted(ATTACKS)} or pgdN / cwN (N steps >= 1)")
    loss, steps = ("ce", "PGD") if match[1] == "pgd" else ("cw", "CW-PGD")
    return AttackSpec("pgd", f"{steps}-{match[2]}", steps=int(match[2]), loss=loss)


def attack_logits(attack: str, head: ZeroShotClassifier, images: torch.Tensor, labels: torch.Tensor, *, eps: float,
                  seed: int = 0, batch_size: int = 256, device: torch.device | str = "cpu", fast: bool = False,
                  amp: bool = False) -> torch.Tensor:
    """Logits (N, C) on CPU of head on images (N, 3, S, S) attacked by the named attack at eps (1/255; 0 = clean).

    fast: same-math faster layers (nbhelpers.fastpath); amp: bf16 autocast for our PGD (GPU)."""
    spec = resolve_attack(attack)
    if spec.kind != "autoattack" or eps == 0:
        return metrics.predict_logits(head, images, labels, eps=eps / 255, steps=spec.steps or 10, loss=spec.loss,
                                      batch_size=batch_size, device=device, seed=seed, fast=fast, amp=amp)
    out = []
    for i in range(0, len(images), batch_size):
        x, y = images[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
        adv = attack_mod.autoattack(head, x, y, eps=eps / 255, n_classes=head.num_classes, seed=seed,
                                    version=spec.version, fast=fast)
        with torch.no_grad():
            out.append(head(adv).float().cpu())
    return torch.cat(out)


def attack_logit_scale(protocol: str) -> float | None:
    """The zero-shot head's logit scale under an evaluation protocol: 1 (raw cosines, PMG-AFT's code) where its record
    says logit_units "cosine"; None (the model's own scale) otherwise, and for a "custom" preprocess."""
    record = paper_data.PROTOCOL_RECORDS.get(protocol)
    return 1.0 if record is not None and record.logit_units == "cosine" else None


def evaluate_cell(head: ZeroShotClassifier, evalset: EvalSet, *, attack: str, eps: float, n: int, seed: int = 0,
                  batch_size: int = 256, device: torch.device | str = "cpu", clean_correct: np.ndarray | None = None,
                  fast: bool = False, amp: bool = False) -> dict:
    """One cell on the first n images of evalset: attack, attack_label, eps (1/255), n, n_requested, accuracy and
    clean_accuracy (fractions, same images), margin_mean (logits), correct (packed hex), seconds, num_classes.

    clean_correct: the clean cell's per-sample correctness (at least n samples), else it is computed here.
    """
    spec = resolve_attack(attack)
    if (spec.kind == "clean") != (eps == 0):
        raise ValueError(f"attack 'clean' goes with eps 0 and only it; got attack {attack!r} at eps {eps}")
    n_cell = min(n, len(evalset))
    x, y = evalset.images[:n_cell], evalset.labels[:n_cell]
    t0 = time.time()
    logits = attack_logits(attack, head, x, y, eps=eps, seed=seed, batch_size=batch_size, device=device, fast=fast,
                           amp=amp)
    seconds = time.time() - t0
    correct = (logits.argmax(1) == y).numpy()
    if spec.kind == "clean":
        clean = correct
    elif clean_correct is not None:
        clean = np.asarray(clean_correct)[:n_cell]
    else:
        clean = (attack_logits("clean", head, x, y, eps=0.0, batch_size=batch_size, device=device,
                               fast=fast).argmax(1) == y).numpy()
    return {"attack": attack, "attack_label": spec.label, "eps": float(eps), "n": n_cell, "n_requested": n,
            "accuracy": float(correct.mean()), "clean_accuracy": float(clean.mean()),
            "margin_mean": float(metrics.logit_margin(logits, y).mean()), "correct": pack_mask(correct),
            "seconds": round(seconds, 3), "num_classes": head.num_classes}


def plan_cells(*, datasets: Sequence[str], models: Sequence[str], attacks: Sequence[str], eps_list: Sequence[float],
               n: int, strong_attacks: Sequence[str] = (), strong_eps_list: Sequence[float] = (),
               n_strong: int | None = None, strong_datasets: Sequence[str] | None = None) -> list[tuple]:
    """Every (dataset, model, attack, eps, n) cell in run order; 'clean' (eps 0) first for each model and dataset.

    attacks run at every eps of eps_list (1/255; zeros are dropped, clean is always there) on the first n images;
    strong_attacks at strong_eps_list on the first n_strong (default n) of the same images, on strong_datasets
    only (None or empty: every dataset). Refuses unknown attacks and bad sizes before any work.
    """
    for name in [*attacks, *strong_attacks]:
        resolve_attack(name)
    if any(e < 0 for e in [*eps_list, *strong_eps_list]):
        raise ValueError("eps must be >= 0 (1/255 units)")
    n_strong = n if n_strong is None else n_strong
    if not 1 <= n_strong <= n:
        raise ValueError(f"need 1 <= n_strong <= n, got n_strong={n_strong}, n={n}")
    bad = [d for d in strong_datasets or [] if d not in datasets]
    if bad:
        raise ValueError(f"strong dataset(s) {bad} are not among the evaluated datasets {list(datasets)}")
    eps_list = [float(e) for e in eps_list if e > 0]
    strong_eps_list = [float(e) for e in strong_eps_list if e > 0]
    cells = []
    for d in datasets:
        strong = strong_attacks if not strong_datasets or d in strong_datasets else []
        for m in models:
            cells.append((d, m, "clean", 0.0, n))
            cells += [(d, m, a, e, n) for a in attacks for e in eps_list]
            cells += [(d, m, a, e, n_strong) for a in strong for e in strong_eps_list]
    return cells


def evaluate(models: Mapping[str, EvalModel], *, profile: str, datasets: Sequence[str], attacks: Sequence[str],
             eps_list: Sequence[float], n: int, strong_attacks: Sequence[str] = (),
             strong_eps_list: Sequence[float] = (), n_strong: int | None = None,
             strong_datasets: Sequence[str] | None = None, finetune_set: str | None = None, seed: int = 0,
             batch_size: int = 256, data_root: str = "", preprocess: Callable | None = None,
             device: torch.device | str = "cpu", fast: bool = False, amp: bool = False, progress: bool = False,
             sampling: str | None = None, lookup: Callable[[dict], dict | None] | None = None,
             store: Callable[[dict], dict] | None = None) -> pd.DataFrame:
    """Rows of every cell of models x datasets x attacks x eps (see :func:`plan_cells`), one row per cell.

    Columns: profile, model, model_label, text_side, the model's tags, dataset, protocol and sampling (how the
    images were read and chosen: data.EvalSet), zero_shot (dataset != finetune_set), seed, image_id and text_id
    (the model's identities, "" when it has none), image_fingerprint and text_fingerprint (hashes of the computed
    weights and class embeddings: provenance), and those of :func:`evaluate_cell`. sampling: the paper subset rule
    (None: the default). lookup(identity) may return a stored row for a cell (identity: profile, model, dataset,
    protocol, sampling, attack, eps, n_requested, seed, the two ids and the two fingerprints), which is then used
    instead of computing it; store(row) receives every computed row and returns the row to keep (05's resumable
    JSON-lines store).
    """
    cells = plan_cells(datasets=datasets, models=list(models), attacks=attacks, eps_list=eps_list, n=n,
                       strong_attacks=strong_attacks, strong_eps_list=strong_eps_list, n_strong=n_strong,
                       strong_datasets=strong_datasets)
    image_fps: dict[int, str] = {}
    rows = []
    bar = progress_bar(total=len(cells), desc="evaluation cells", disable=not progress)
    for dataset in dict.fromkeys(c[0] for c in cells):
        evalset = None
        for name, model in models.items():
            head = clean_correct = None
            for _, _, attack, eps, n_cell in [c for c in cells if c[0] == dataset and c[1] == name]:
                if evalset is None:
                    evalset = load_eval_set(profile, dataset, n=n, seed=seed, data_root=data_root,
                                            preprocess=preprocess, sampling=sampling)
                if head is None:
                    head = build_head(model.image_model, model.embed(evalset.classnames, evalset.templates),
                                      logit_scale=attack_logit_scale(evalset.protocol), device=device)
                    key = id(model.image_model)
                    if key not in image_fps:
                        image_fps[key] = model_fingerprint(model.image_model.clip.visual)
                    identity = {"profile": profile, "model": name, "model_label": model.label,
                                "text_side": model.text_side, **model.tags, "dataset": dataset,
                                "protocol": evalset.protocol, "sampling": evalset.sampling,
                                "zero_shot": dataset != finetune_set, "seed": seed,
                                "image_id": model.image_id, "text_id": model.text_id,
                                "image_fingerprint": image_fps[key],
                                "text_fingerprint": tensor_fingerprint(head.class_embeddings)}
                cell = {**identity, "attack": attack, "eps": eps, "n_requested": n_cell}
                row = lookup(cell) if lookup is not None else None
                if row is None:
                    row = {**identity, **evaluate_cell(head, evalset, attack=attack, eps=eps, n=n_cell, seed=seed,
                                                       batch_size=batch_size, device=device,
                                                       clean_correct=clean_correct, fast=fast, amp=amp)}
                    row = store(row) if store is not None else row
                if attack == "clean":
                    clean_correct = unpack_mask(row["correct"], row["n"])
                rows.append(row)
                bar.update(1)
                bar.set_postfix_str(f"{dataset} {name} {attack} {eps:g}", refresh=False)
    bar.close()
    return pd.DataFrame(rows)


def text_structure(text_sides: dict[str, EmbeddingFn], *, profile: str, datasets: list[str],
                   reference: str = "original", data_root: str = "",
                   protocol: str = paper_data.DEFAULT_PROTOCOL) -> pd.DataFrame:
    """Per text side and dataset: inter-class distances and the Spearman consistency with the reference side, on
    the class text `protocol` scores with."""
    rows = []
    for name in datasets:
        classnames, templates = classnames_for(profile, name, data_root=data_root, protocol=protocol)
        ref = text_sides[reference](classnames, templates)
        for side, embed in text_sides.items():
            emb = embed(classnames, templates)
            rows.append({"text": side, "dataset": name, **analysis.text_distance_stats(emb),
                         "consistency_rho": analysis.semantic_consistency_rho(ref, emb)})
    return pd.DataFrame(rows)


def robustness_table(model: ClipModel, *, profile: str, datasets: Sequence[str], eps_list: Sequence[float], n: int,
                     steps: int = 10, batch_size: int = 256, seed: int = 0, data_root: str = "",
                     preprocess: Callable | None = None, device: torch.device | str = "cpu",
                     progress: bool = False) -> pd.DataFrame:
    """A base model's zero-shot accuracy per dataset and eps (1/255 units; 0 = clean) under PGD-`steps`, through
    :func:`evaluate`: rows (task, eps, accuracy, chance, n, attack, ...), the table of notebook 00."""
    rows = evaluate({"zero_shot": zero_shot_model(model, device=device)}, profile=profile, datasets=datasets,
                    attacks=[f"pgd{steps}"], eps_list=[e for e in eps_list if e > 0], n=n, batch_size=batch_size,
                    seed=seed, data_root=data_root, preprocess=preprocess, device=device, progress=progress)
    return rows.rename(columns={"dataset": "task"}).assign(chance=lambda d: 1 / d.num_classes)
