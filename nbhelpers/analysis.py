"""The paper's analyses: margin offset between eps (finding 1) and margin vs semantic similarity (finding 2)."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import torch
from scipy import stats


def rel_spread(small: np.ndarray, large: np.ndarray) -> np.ndarray:
    """Offset spread relative to the margin spread, std(large - small) / std(small) along the last axis (ddof 1;
    the one definition of rel_spread), in the margins' own float dtype: 0 for a constant shift, about 1.4 for
    unrelated margins of equal spread; NaN where the small-eps margins are constant (no spread to compare with)."""
    small, large = np.asarray(small), np.asarray(large)
    sd = small.std(axis=-1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, (large - small).std(axis=-1, ddof=1) / sd, np.nan)


def margin_offsets(sweep: pd.DataFrame) -> pd.DataFrame:
    """For each eps pair (small < large): mean and spread of the per-sample offset and the small->large linear fit.

    `sweep` is the long table of :func:`nbhelpers.metrics.margin_sweep`. Columns: eps_small, eps_large,
    offset_mean, offset_std, rel_spread (:func:`rel_spread`: offset std / std of the small-eps margin, < 1 means
    the offset is more stable than the margins themselves), slope, intercept, pearson_r, n.
    """
    wide = sweep.pivot(index="sample", columns="eps", values="margin")
    rows = []
    for small, large in itertools.combinations(sorted(wide.columns), 2):
        a, b = wide[small].to_numpy(), wide[large].to_numpy()
        off = b - a
        fit = stats.linregress(a, b)
        rows.append({"eps_small": small, "eps_large": large, "offset_mean": off.mean(), "offset_std": off.std(ddof=1),
                     "rel_spread": rel_spread(a, b)[()], "slope": fit.slope,
                     "intercept": fit.intercept, "pearson_r": fit.rvalue, "n": len(a)})
    return pd.DataFrame(rows)


def offset_between(sweep: pd.DataFrame, *, eps_small: float, eps_large: float) -> pd.Series:
    """The :func:`margin_offsets` row of one eps pair (1/255 units): offset_mean, offset_std, pearson_r, ..."""
    off = margin_offsets(sweep)
    row = off[(off.eps_small == eps_small) & (off.eps_large == eps_large)]
    if row.empty:
        raise ValueError(f"the sweep has no eps pair ({eps_small}, {eps_large}); its eps: {sorted(sweep.eps.unique())}")
    return row.iloc[0]


def pair_table(pair_margin: torch.Tensor, class_embeddings: torch.Tensor, classnames: list[str]) -> pd.DataFrame:
    """One row per ordered class pair (i != j): mean margin z_i - z_j on class-i samples and text cosine similarity."""
    emb = torch.nn.functional.normalize(class_embeddings.float().cpu(), dim=-1)
    sim = (emb @ emb.T).numpy()
    pm = pair_margin.numpy()
    c = len(classnames)
    i, j = np.where(~np.eye(c, dtype=bool))
    df = pd.DataFrame({"true": [classnames[k] for k in i], "other": [classnames[k] for k in j],
                       "similarity": sim[i, j], "margin": pm[i, j]})
    return df.dropna(subset=["margin"]).reset_index(drop=True)


def correlate(x: np.ndarray | pd.Series, y: np.ndarray | pd.Series) -> dict[str, float]:
    """Pearson and Spearman correlation with two-sided p-values (scipy.stats)."""
    p = stats.pearsonr(x, y)
    s = stats.spearmanr(x, y)
    return {"pearson_r": float(p.statistic), "pearson_p": float(p.pvalue),
            "spearman_rho": float(s.statistic), "spearman_p": float(s.pvalue), "n": int(len(x))}


def robust_accuracy_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (fraction) and mean/median margin per eps from the long sweep table."""
    g = sweep.groupby("eps")
    return pd.DataFrame({"accuracy": g["correct"].mean(), "margin_mean": g["margin"].mean(),
                         "margin_median": g["margin"].median()}).reset_index()


def text_distance_stats(emb: torch.Tensor) -> dict[str, float]:
    """Inter-class Euclidean distances of unit embeddings (C, D): min, mean, and mean cosine similarity."""
    e = torch.nn.functional.normalize(emb.float().cpu(), dim=-1)
    d = torch.cdist(e, e)
    off = ~torch.eye(len(e), dtype=torch.bool)
    return {"min_distance": float(d[off].min()), "mean_distance": float(d[off].mean()),
            "mean_cosine": float((e @ e.T)[off].mean())}


def text_crowding_stats(emb: torch.Tensor) -> dict[str, float]:
    """How crowded class text embeddings (C, D) are (docs/WORLD2_PREMISES.md, section 0): over class pairs of the
    unit embeddings, the mean cosine, the mean over classes of the cosine to the nearest other class, the minimum
    Euclidean distance, and the spread of the pairwise cosines (std; 90th minus 50th percentile)."""
    e = torch.nn.functional.normalize(emb.double().cpu(), dim=-1)
    if len(e) < 2:
        raise ValueError(f"need at least 2 classes, got {len(e)}")
    cos = e @ e.T
    iu = torch.triu_indices(len(e), len(e), offset=1)
    pairs = cos[iu[0], iu[1]].numpy()
    nearest = cos.masked_fill(torch.eye(len(e), dtype=torch.bool), -2.0).max(dim=1).values
    p50, p90 = np.percentile(pairs, [50, 90])
    return {"classes": float(len(e)), "mean_cosine": float(pairs.mean()), "nn_cosine": float(nearest.mean()),
            "min_distance": float(np.sqrt(np.clip(2 - 2 * pairs.max(), 0, None))), "cosine_std": float(pairs.std()),
            "cosine_p90_p50": float(p90 - p50)}


def semantic_consistency_rho(reference: torch.Tensor, tuned: torch.Tensor) -> float:
    """Spearman rho between the off-diagonal pairwise cosine similarities of reference and tuned embeddings (C, D)."""
    r = torch.nn.functional.normalize(reference.float().cpu(), dim=-1)
    t = torch.nn.functional.normalize(tuned.float().cpu(), dim=-1)
    iu = torch.triu_indices(len(r), len(r), offset=1)
    return float(stats.spearmanr((r @ r.T)[iu[0], iu[1]].numpy(), (t @ t.T)[iu[0], iu[1]].numpy()).statistic)


def pairwise_distances(emb: torch.Tensor) -> np.ndarray:
    """Upper-triangle Euclidean distances of unit embeddings (C, D), as a flat array (for histograms)."""
    e = torch.nn.functional.normalize(emb.float().cpu(), dim=-1)
    iu = torch.triu_indices(len(e), len(e), offset=1)
    return torch.cdist(e, e)[iu[0], iu[1]].numpy()


def image_class_separation(model, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 256,
                           device: torch.device | str = "cpu") -> dict[str, float]:
    """Image-embedding inter-class structure: min and mean distance between unit class centroids of the images."""
    with torch.no_grad():
        feats = torch.cat([model.encode_image(images[i:i + batch_size].to(device)).cpu()
                           for i in range(0, len(images), batch_size)])
    classes = labels.unique()
    centroids = torch.stack([feats[labels == c].mean(0) for c in classes])
    return {k.replace("distance", "centroid_distance"): v for k, v in text_distance_stats(centroids).items()
            if k != "mean_cosine"}
