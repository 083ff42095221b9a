"""TIMA's premises (docs/WORLD2_PREMISES.md): the criteria a world and its model must meet before a claim is
testable there, as data, and their measurement on the pretrained model (notebook 00).

The thresholds are the document's, committed before a second world existed; each premise is judged "holds",
"fails" or "unclear" (not measurable here), and a claim whose premise does not hold is "not testable here".
P4 (IAT moves the text) needs IAT's runs and is judged in 03; P6's per-model parts need the fine-tuned models.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import stats

from nbhelpers import analysis, world
from nbhelpers.data import classnames_for
from nbhelpers.zeroshot import build_class_embeddings

HOLDS, FAILS, UNCLEAR = "holds", "fails", "unclear"


@dataclass(frozen=True)
class Thresholds:
    """The numbers of docs/WORLD2_PREMISES.md, section 2 (accuracies as fractions; cosines of unit embeddings)."""

    finetune_classes: int = 200  # P1 (paper's: TinyImageNet)
    crowd_task_classes: int = 50  # P2, P3: tasks with at least this many classes are judged (ours)
    mean_cosine: float = 0.50  # P2 (a) (ours)
    nn_cosine: float = 0.75  # P2 (b) (ours)
    large_tasks: int = 3  # P2 (c): zero-shot tasks with >= large_task_classes classes (ours)
    large_task_classes: int = 100  # P2 (c)
    auc: float = 0.75  # P3: AUC of text cosine for pairs that share a parent / attribute (ours)
    spearman: float = 0.30  # P3: against a graded ground truth (ours)
    spread: float = 0.05  # P5: std and p90 - p50 of the pairwise cosines (ours)
    attack_ratio: tuple[float, float] = (0.10, 0.60)  # P6: pretrained PGD-10 robust / clean at 1/255 (ours)
    patch_tokens: int = 16  # P7: a ViT image tower with at least this many patch tokens (ours)


THRESHOLDS = Thresholds()
CLAIMS: dict[str, tuple[str, ...]] = {  # the table at the end of the document's section 2
    "IAT spreads crowded class texts": ("P1", "P2"),
    "IAT keeps the semantic structure": ("P1", "P2", "P3"),
    "IAT helps robustness": ("P1", "P2", "P4", "P7"),
    "finding 2: margin vs inter-class text similarity": ("P3", "P5"),
    "finding 1: stable margin offset": ("P6",),
    "TAI's text-distance margin adds robustness": ("P1", "P3", "P5", "P7"),
    "visual prompts vs fine-tuning": ("P7",),
}


def shared_attributes(task: str) -> np.ndarray:
    """Mini world: per class pair (i < j, upper-triangle order) the number of label attributes the two classes
    share, the ground-truth similarity of P3 (C * (C - 1) / 2,)."""
    classes = world.task_spec(task).class_attributes()
    iu = np.triu_indices(len(classes), k=1)
    return np.array([sum(classes[i][a] == classes[j][a] for a in classes[i]) for i, j in zip(*iu)])


def ground_truth_agreement(emb: torch.Tensor, truth: np.ndarray) -> dict[str, float]:
    """How well pairwise text cosine (upper triangle of unit emb (C, D)) follows a ground truth per pair: AUC of
    'shares more' against 'shares less' where the truth has two levels, Spearman where it has more; NaN where it
    has one (nothing to agree with)."""
    e = torch.nn.functional.normalize(emb.double().cpu(), dim=-1)
    iu = torch.triu_indices(len(e), len(e), offset=1)
    cos = (e @ e.T)[iu[0], iu[1]].numpy()
    levels = np.unique(truth)
    auc = rho = float("nan")
    if len(levels) == 2:
        hi, lo = cos[truth == levels[1]], cos[truth == levels[0]]
        auc = float(stats.mannwhitneyu(hi, lo).statistic / (len(hi) * len(lo)))
    elif len(levels) > 2:
        rho = float(stats.spearmanr(cos, truth).statistic)
    return {"auc": auc, "spearman": rho}


def text_premise_stats(model: object, *, tasks: Sequence[str], device: torch.device | str = "cpu") -> pd.DataFrame:
    """Mini world: per task (zero-shot and fine-tuning) the pretrained model's text statistics of section 0: class
    count, analysis.text_crowding_stats, and the agreement with the shared-attribute ground truth."""
    rows = []
    for task in tasks:
        names, templates = classnames_for("mini", task)
        emb = build_class_embeddings(model, names, templates, device=device)
        rows.append({"task": task, "role": world.task_role(task), **analysis.text_crowding_stats(emb),
                     **ground_truth_agreement(emb, shared_attributes(task))})
    return pd.DataFrame(rows)


def image_tower(model: object) -> dict[str, object]:
    """The image tower's kind and, for a ViT, its patch tokens (open_clip's VisionTransformer grid)."""
    visual = model.clip.visual
    grid = getattr(visual, "grid_size", None)
    return {"tower": type(visual).__name__, "patch_tokens": int(np.prod(grid)) if grid is not None else 0}


def attack_ratio(grid: pd.DataFrame, *, eps: float = 1.0) -> float | None:
    """P6's bracket: robust accuracy at eps (1/255 units) over clean accuracy, per task, averaged over tasks, from
    a robustness table with columns task, eps, accuracy (00's); None where the table lacks eps or clean."""
    acc = grid.pivot_table(index="task", columns="eps", values="accuracy")
    if eps not in acc.columns or 0.0 not in acc.columns:
        return None
    return float((acc[eps] / acc[0.0]).mean())


def _verdict(ok: bool | None) -> str:
    return UNCLEAR if ok is None else HOLDS if ok else FAILS


def judge_premises(task_stats: pd.DataFrame, *, tower: Mapping[str, object], robust_ratio: float | None,
                   t: Thresholds = THRESHOLDS) -> pd.DataFrame:
    """One row per premise measurable before training (P1, P2, P3, P5, P6's attack bracket, P7): what was measured,
    the criterion, and holds / fails / unclear. robust_ratio: the pretrained model's PGD-10 robust / clean accuracy
    at 1/255 averaged over the zero-shot tasks (None: not measured)."""
    ft = task_stats[task_stats.role == "finetune"]
    zs = task_stats[task_stats.role == "test"]
    judged = pd.concat([ft, zs[zs.classes >= t.crowd_task_classes]])

    def listing(frame: pd.DataFrame, column: str) -> str:
        return ", ".join(f"{r.task} {getattr(r, column):.2f}" for r in frame.itertuples())

    crowded = bool(((judged.mean_cosine >= t.mean_cosine) & (judged.nn_cosine >= t.nn_cosine)).all())
    large = int((zs.classes >= t.large_task_classes).sum())
    agree = judged.auc.where(judged.auc.notna(), judged.spearman)
    agree_ok = [(a >= (t.auc if pd.notna(r.auc) else t.spearman)) if pd.notna(a) else None
                for a, r in zip(agree, judged.itertuples())]
    spread_ok = bool(((judged.cosine_std >= t.spread) & (judged.cosine_p90_p50 >= t.spread)).all())
    lo, hi = t.attack_ratio
    rows = [
        ("P1", "fine-tuning task of the paper's size", f"{int(ft.classes.iloc[0])} classes",
         f">= {t.finetune_classes} classes", _verdict(bool(ft.classes.iloc[0] >= t.finetune_classes))),
        ("P2", "crowded class texts",
         f"mean cosine {listing(judged, 'mean_cosine')}; nearest-neighbour cosine {listing(judged, 'nn_cosine')}; "
         f"{large} zero-shot tasks with >= {t.large_task_classes} classes",
         f"mean >= {t.mean_cosine}, nearest >= {t.nn_cosine} on the tasks with >= {t.crowd_task_classes} classes; "
         f">= {t.large_tasks} such large tasks", _verdict(crowded and large >= t.large_tasks)),
        ("P3", "text similarity follows a ground truth",
         "; ".join(f"{r.task} " + (f"AUC {r.auc:.2f}" if pd.notna(r.auc) else f"Spearman {r.spearman:.2f}")
                   for r in judged.itertuples()),
         f"AUC >= {t.auc} (two levels) or Spearman >= {t.spearman} (graded)",
         _verdict(None if any(o is None for o in agree_ok) else all(agree_ok))),
        ("P5", "pairs that differ in similarity",
         f"std {listing(judged, 'cosine_std')}; p90 - p50 {listing(judged, 'cosine_p90_p50')}",
         f"both >= {t.spread}", _verdict(spread_ok)),
        ("P6", "an attack neither too weak nor saturating (pretrained model)",
         "not measured" if robust_ratio is None else f"PGD-10 robust / clean at 1/255 {robust_ratio:.2f}",
         f"in [{lo}, {hi}]", _verdict(None if robust_ratio is None else lo <= robust_ratio <= hi)),
        ("P7", "a ViT image tower", f"{tower['tower']}, {tower['patch_tokens']} patch tokens",
         f"a ViT with >= {t.patch_tokens} patch tokens",
         _verdict(tower["tower"] == "VisionTransformer" and int(tower["patch_tokens"]) >= t.patch_tokens)),
    ]
    return pd.DataFrame(rows, columns=["premise", "what", "measured", "criterion", "verdict"])


def testable_claims(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per claim of CLAIMS: its premises and whether it is testable here ('not testable here' when one fails,
    'premises not all measured here' when none fails but one is unclear or judged elsewhere)."""
    by_id = dict(zip(verdicts.premise, verdicts.verdict))
    rows = []
    for claim, needs in CLAIMS.items():
        got = [by_id.get(p) for p in needs]
        state = ("not testable here" if FAILS in got else "testable" if all(g == HOLDS for g in got)
                 else "premises not all measured here")
        failed = [p for p, g in zip(needs, got) if g == FAILS]
        rows.append({"claim": claim, "premises": ", ".join(needs), "failed": ", ".join(failed), "status": state})
    return pd.DataFrame(rows)
