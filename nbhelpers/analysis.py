"""The paper's analyses: margin offset between eps (finding 1) and margin vs semantic similarity (finding 2)."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import torch
from scipy import stats


def margin_offsets(sweep: pd.DataFrame) -> pd.DataFrame:
    """For each eps pair (small < large): mean and spread of the per-sample offset and the small->large linear fit.

    `sweep` is the long table of :func:`nbhelpers.metrics.margin_sweep`. Columns: eps_small, eps_large,
    offset_mean, offset_std, rel_spread (offset std / std of the small-eps margin: < 1 means the offset is more
    stable than the margins themselves), slope, intercept, pearson_r, n.
    """
    wide = sweep.pivot(index="sample", columns="eps", values="margin")
    rows = []
    for small, large in itertools.combinations(sorted(wide.columns), 2):
        a, b = wide[small].to_numpy(), wide[large].to_numpy()
        off = b - a
        fit = stats.linregress(a, b)
        rows.append({"eps_small": small, "eps_large": large, "offset_mean": off.mean(), "offset_std": off.std(ddof=1),
                     "rel_spread": off.std(ddof=1) / max(a.std(ddof=1), 1e-12), "slope": fit.slope,
                     "intercept": fit.intercept, "pearson_r": fit.rvalue, "n": len(a)})
    return pd.DataFrame(rows)


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
