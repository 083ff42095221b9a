"""The findings layer: one verdict per claim (one vocabulary, 00-07), with numbers and uncertainty.

Every notebook ends with a findings section. Before the result it states the claim and the operational
criterion; after it, one function of this module turns the notebook's tables into :class:`Finding` records and
:func:`write_findings` stores them as ``results/NN_findings.json``. ``scripts/findings_table.py`` renders all
of those files into the README's findings table (and ``--check`` keeps the README in step with them).

Uncertainty (00-05): seeded percentile bootstraps (over samples, classes or images), Wilson intervals for
accuracies, Fisher-z intervals for Pearson r, t-intervals over datasets. Those intervals cover the sampling of the
evaluated items only; the models of 03-05 were trained once (one seed), so training variance is not in them.

Notebook 06 (several training seeds, two stores) uses the rules of ``docs/VERDICT_RULES.md``, implemented once
here: :func:`effect_interval` (between-run variance plus an image-sampling term, Welch-Satterthwaite degrees of
freedom), :func:`holm` (family-wise levels), :func:`judge_effect` (with the smallest effect of interest
:data:`SESOI`) and :func:`judge_noninferior`; every number in them is an accuracy fraction (0.01 = 1 point).

Verdict vocabulary, one for every notebook (:data:`RULE`): ``reproduced`` (every sub-criterion holds, its interval
on the claimed side), ``not reproduced`` (some sub-criterion fails, its interval on the other side, and none
holds), ``mixed`` (some hold and some fail: for some sub-criteria, baselines or units and not others; or a
robustness gain bought with more clean accuracy than the tolerance), ``inconclusive`` (none fails but some
interval straddles its threshold: the data cannot tell), and, only where a smallest effect of interest is
declared (06), ``no difference`` (the interval lies inside +-SESOI: any effect is smaller than the smallest that
matters).
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from nbhelpers import paths
from nbhelpers.analysis import rel_spread
from nbhelpers.utils import atomic_path, code_version, unpack_mask

VERDICTS = ("reproduced", "not reproduced", "mixed", "no difference", "inconclusive")
REPRODUCED, NOT_REPRODUCED, MIXED, NO_DIFFERENCE, INCONCLUSIVE = VERDICTS
# ours (docs/VERDICT_RULES.md): the smallest effect of interest, an accuracy fraction (1 point), and the family level
SESOI = 0.01
FAMILY_ALPHA = 0.05
FINDINGS_SUFFIX = "_findings.json"
SEED_NOTE = "one training seed: the intervals cover the sampling of images only, not training variance"
# the one rule that turns sub-criteria into a verdict (criterion texts quote it; _combine implements it)
RULE = ("reproduced if every part holds; mixed if some hold and some fail; not reproduced if some fail and none "
        "holds; inconclusive otherwise (an interval straddles its threshold)")


# ----------------------------------------------------------------------------------------------- the record
@dataclass(frozen=True)
class Finding:
    """One claim, its criterion, the paper's number and ours (with uncertainty), and the verdict."""

    id: str  # short unique key, e.g. "01_margin_offset"
    notebook: str  # two digits, e.g. "01"
    claim: str  # one sentence
    criterion: str  # operational, stated before the result
    paper: str  # the paper's number as text, or ""
    ours: str  # our number(s) with uncertainty, as text
    estimate: float  # the headline number behind `ours`
    ci_low: float  # its interval (NaN where there is none)
    ci_high: float
    verdict: str  # one of VERDICTS
    figure: str  # e.g. "figures/01_margin_offset.png", or ""
    detail: str = ""  # where it holds and where it does not
    scope: str = ""  # the world, model and sources of variance the verdict covers ("": write_findings fills it in)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")
        if not re.fullmatch(r"\d\d", self.notebook):
            raise ValueError(f"notebook {self.notebook!r} must be two digits such as '01'")
        if not self.id or not self.claim or not self.criterion:
            raise ValueError("a finding needs an id, a claim and a criterion")

    def to_dict(self) -> dict:
        """JSON-safe dict (NaN and infinities become None)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


class Interval(NamedTuple):
    """A point estimate with the two ends of its confidence interval."""

    estimate: float
    low: float
    high: float


# ----------------------------------------------------------------------------------------------- statistics
def _percentile_ci(replicates: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (non-finite replicates dropped)."""
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return math.nan, math.nan
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(r, [a, 1.0 - a])
    return float(lo), float(hi)


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of every row of x (B, n) with the same row of y (B, n) -> (B,); NaN for constant rows."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(axis=1) / den, np.nan)


def _correlation(x: np.ndarray, y: np.ndarray, method: Literal["pearson", "spearman"]) -> float:
    """Pearson or Spearman correlation of two 1-D arrays (NaN when undefined)."""
    if method == "spearman":
        x, y = stats.rankdata(x), stats.rankdata(y)
    return float(_row_pearson(np.asarray(x, float)[None], np.asarray(y, float)[None])[0])


def bootstrap_correlation_ci(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, *,
                             method: Literal["pearson", "spearman"] = "spearman",
                             groups: Sequence | np.ndarray | None = None, n_boot: int = 2000, level: float = 0.95,
                             seed: int = 0) -> Interval:
    """Correlation of x and y (n,) with a seeded percentile bootstrap CI: resample pairs, or whole groups if given."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of the same length, got {x.shape} and {y.shape}")
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    estimate = _correlation(x, y, method)
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    if groups is None:
        n, chunk = len(x), max(1, 2_000_000 // max(len(x), 1))
        for start in range(0, n_boot, chunk):
            idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
            xs, ys = x[idx], y[idx]
            if method == "spearman":
                xs, ys = stats.rankdata(xs, axis=1), stats.rankdata(ys, axis=1)
            reps[start:start + len(idx)] = _row_pearson(xs, ys)
    else:
        codes, _ = pd.factorize(np.asarray(groups))
        if len(codes) != len(x):
            raise ValueError("groups must have one entry per (x, y) pair")
        members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
        for b in range(n_boot):
            idx = np.concatenate([members[g] for g in rng.integers(0, len(members), size=len(members))])
            reps[b] = _correlation(x[idx], y[idx], method)
    return Interval(estimate, *_percentile_ci(reps, level))


def fisher_z_ci(r: float, n: int, *, level: float = 0.95) -> Interval:
    """Fisher-z confidence interval of a Pearson r from n independent pairs (NaN ends for n <= 3)."""
    if n <= 3 or not math.isfinite(r):
        return Interval(float(r), math.nan, math.nan)
    z = math.atanh(min(max(r, -1 + 1e-15), 1 - 1e-15))
    half = stats.norm.ppf(0.5 + level / 2) / math.sqrt(n - 3)
    return Interval(float(r), math.tanh(z - half), math.tanh(z + half))


def wilson_ci(successes: int, n: int, *, level: float = 0.95) -> Interval:
    """Accuracy successes / n (fraction) with its Wilson score interval (scipy.stats.binomtest)."""
    if n <= 0:
        raise ValueError("n must be positive")
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return Interval(successes / n, float(ci.low), float(ci.high))


def t_interval(values: Sequence[float] | np.ndarray, *, level: float = 0.95) -> Interval:
    """Mean of a few values (e.g. one per dataset) with its Student-t interval (NaN ends for fewer than 2)."""
    v = np.asarray(values, dtype=float)
    mean = float(v.mean()) if v.size else math.nan
    if v.size < 2:
        return Interval(mean, math.nan, math.nan)
    sem = float(stats.sem(v))
    if sem == 0:
        return Interval(mean, mean, mean)
    lo, hi = stats.t.interval(level, v.size - 1, loc=mean, scale=sem)
    return Interval(mean, float(lo), float(hi))


def paired_bootstrap_diff_ci(correct_a: np.ndarray, correct_b: np.ndarray, *,
                             strata: Sequence | np.ndarray | None = None, n_boot: int = 2000,
                             level: float = 0.95, seed: int = 0) -> Interval:
    """Accuracy of A minus B (fraction) on the same images, from per-image correctness (n,) booleans (or any per-image
    scores, e.g. PGD-minus-AA gaps), with a seeded paired bootstrap CI over images; with strata (e.g. dataset per
    image) images are resampled within each stratum and the stratum differences averaged with equal weight (a mean
    over datasets)."""
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired masks must be non-empty 1-D arrays of one length, got {a.shape} and {b.shape}")
    d = a - b
    codes = np.zeros(len(d), dtype=int) if strata is None else pd.factorize(np.asarray(strata))[0]
    if len(codes) != len(d):
        raise ValueError("strata must have one entry per image")
    rng = np.random.default_rng(seed)
    parts = [d[codes == s] for s in range(codes.max() + 1)]
    estimate = float(np.mean([p.mean() for p in parts]))
    reps = np.zeros(n_boot)
    for p in parts:
        chunk = max(1, 4_000_000 // len(p))
        for start in range(0, n_boot, chunk):
            m = min(chunk, n_boot - start)
            reps[start:start + m] += p[rng.integers(0, len(p), size=(m, len(p)))].mean(axis=1)
    reps /= len(parts)
    return Interval(estimate, *_percentile_ci(reps, level))


def bootstrap_rel_spread_ci(small: np.ndarray, large: np.ndarray, *, n_boot: int = 2000, level: float = 0.95,
                            seed: int = 0) -> Interval:
    """:func:`nbhelpers.analysis.rel_spread` of paired units (n,), in float64, with a seeded percentile bootstrap
    CI over the units."""
    small, large = np.asarray(small, dtype=float), np.asarray(large, dtype=float)
    if small.shape != large.shape or small.ndim != 1:
        raise ValueError("small and large must be paired 1-D arrays")
    estimate = float(rel_spread(small, large))
    if len(small) < 3:
        return Interval(estimate, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    chunk = max(1, 2_000_000 // len(small))
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, len(small), size=(min(chunk, n_boot - start), len(small)))
        reps[start:start + len(idx)] = rel_spread(small[idx], large[idx])
    return Interval(estimate, *_percentile_ci(reps, level))


def _side(low: float, high: float, threshold: float) -> Literal["below", "above", "straddles"]:
    """Where an interval lies relative to a threshold (NaN ends count as straddling)."""
    if math.isfinite(high) and high < threshold:
        return "below"
    if math.isfinite(low) and low > threshold:
        return "above"
    return "straddles"


def _ci(iv: Interval, digits: int = 2, scale: float = 1.0, signed: bool = False) -> str:
    """'est [low, high]' with a fixed number of decimals."""
    f = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    parts = [iv.estimate * scale, iv.low * scale, iv.high * scale]
    e, lo, hi = (f.format(p) if math.isfinite(p) else "n/a" for p in parts)
    return f"{e} [{lo}, {hi}]"


def _part(iv: Interval, threshold: float, *, claimed: Literal["above", "below"] = "above") -> bool | None:
    """One part of a verdict: True if iv lies on the claimed side of threshold, False if on the other, None if it
    straddles it (or has a NaN end)."""
    side = _side(iv.low, iv.high, threshold)
    return None if side not in ("above", "below") else side == claimed


def judge_ahead(intervals: Sequence[Interval], *, threshold: float = 0.0, clean: Interval | None = None,
                clean_tolerance: float = 0.01) -> str:
    """The one 'ahead with its interval' verdict, every number in one unit: accuracy fractions for differences
    (0.01 = 1 point; callers in points convert), else the unit of `threshold`.

    Each interval is a part: it holds if it lies above threshold, fails if it lies below, is undecided if it
    straddles it (or has a NaN end); :func:`_combine` applies :data:`RULE`. Given `clean` (the clean-accuracy
    difference), a 'reproduced' whose clean upper end lies below -clean_tolerance is mixed (a robustness gain bought
    with clean accuracy is not a refutation) and one whose clean interval has a NaN end is inconclusive.
    """
    if not intervals:
        raise ValueError("judge_ahead needs at least one interval")
    verdict = _combine(_part(iv, threshold) for iv in intervals)
    if verdict != REPRODUCED or clean is None:
        return verdict
    if not math.isfinite(clean.high):
        return INCONCLUSIVE
    return REPRODUCED if clean.high >= -clean_tolerance else MIXED


class Effect(NamedTuple):
    """A mean effect over runs (training seeds, possibly of several stores) with its interval at `level`.

    Every number is in the unit of the runs' values (accuracy fractions in 06). se**2 = seed_var + image_var:
    seed_var is the between-run variance of the mean (s**2 / k), image_var the variance that sampling the fixed
    test images adds (the same images in every run, so the spread of the runs cannot show it); df is the
    Welch-Satterthwaite degrees of freedom of that sum; p the two-sided p-value against `null`.
    """

    estimate: float
    low: float
    high: float
    level: float
    se: float
    df: float
    p: float
    seed_var: float
    image_var: float
    n_runs: int
    null: float = 0.0

    def at_level(self, level: float) -> "Effect":
        """The same effect with its interval at another level (e.g. a Holm level)."""
        half = _half_width(self.se, self.df, level)
        return self._replace(low=self.estimate - half, high=self.estimate + half, level=level)


def _half_width(se: float, df: float, level: float) -> float:
    """Half-width of a two-sided interval: t quantile (normal for infinite df) x se; NaN if se is NaN."""
    if not math.isfinite(se):
        return math.nan
    q = stats.norm.ppf(0.5 + level / 2) if not math.isfinite(df) else stats.t.ppf(0.5 + level / 2, df)
    return float(q * se)


def effect_interval(run_values: Sequence[float] | np.ndarray, image_var: float = 0.0, *, level: float = 0.95,
                    null: float = 0.0) -> Effect:
    """Mean of k run values (one per training run: a paired difference, or a score) with an interval that covers
    the training runs AND the sampling of the test images (docs/VERDICT_RULES.md, ours).

    Variance of the mean: s**2 / k (between runs, sample variance) + image_var (given: the variance that the
    choice of test images adds, see :func:`paired_image_variance` and :func:`measured_image_variance`).
    Degrees of freedom (Welch-Satterthwaite, image_var taken as known): (s2k + image_var)**2 / (s2k**2 / (k - 1)),
    infinite when the runs agree exactly. With image_var = 0 this is the Student-t interval over runs
    (:func:`t_interval`). Fewer than 2 runs: NaN ends (the run-to-run part cannot be estimated).
    """
    v = np.asarray(run_values, dtype=float)
    k = int(v.size)
    if k == 0:
        raise ValueError("effect_interval needs at least one run value")
    if not (math.isfinite(image_var) and image_var >= 0):
        raise ValueError(f"image_var must be a finite variance >= 0, got {image_var}")
    mean = float(v.mean())
    if k < 2:
        return Effect(mean, math.nan, math.nan, level, math.nan, math.nan, math.nan, math.nan, float(image_var), k,
                      null)
    seed_var = float(v.var(ddof=1)) / k
    var = seed_var + image_var
    df = var * var / (seed_var * seed_var / (k - 1)) if seed_var > 0 else math.inf
    se = math.sqrt(var)
    if se == 0:
        p = 1.0 if mean == null else 0.0
    else:
        z = abs(mean - null) / se
        p = float(2 * (stats.norm.sf(z) if not math.isfinite(df) else stats.t.sf(z, df)))
    half = _half_width(se, df, level)
    return Effect(mean, mean - half, mean + half, level, se, df, p, seed_var, float(image_var), k, null)


def paired_image_variance(p_a: Sequence[float] | np.ndarray, p_b: Sequence[float] | np.ndarray,
                          n: Sequence[int] | np.ndarray, *, kappa: float = 1.0) -> float:
    """Image-sampling variance of a difference of accuracies (mean over T tasks of a - b on the same n_t images per
    task) when per-image results are not stored: sum_t kappa (p_a(1 - p_a) + p_b(1 - p_b)) / n_t / T**2.

    kappa = 1 is the variance of two independent binomial samples, an upper bound for the paired difference
    whenever the two models' per-image results are not negatively correlated; a measured kappa < 1 (the ratio of
    the measured paired variance to that bound, on images where per-image results exist) credits the pairing.
    """
    a, b, m = (np.asarray(x, dtype=float) for x in (p_a, p_b, n))
    if not (a.shape == b.shape == m.shape) or a.ndim != 1 or a.size == 0:
        raise ValueError(f"p_a, p_b and n must be 1-D of one length (one per task), got {a.shape}, {b.shape}, {m.shape}")
    if (m <= 0).any() or not 0 <= kappa:
        raise ValueError("image counts must be positive and kappa >= 0")
    return float(np.sum(kappa * (a * (1 - a) + b * (1 - b)) / m) / a.size ** 2)


def measured_image_variance(per_task: Sequence[np.ndarray]) -> float:
    """Image-sampling variance of a mean over T tasks of per-image values (e.g. each image's difference of
    correctness, averaged over the runs first), from the values themselves: sum_t var_t / n_t / T**2 (sample
    variance, ddof 1). This is the variance the runs share because they all saw these images."""
    if not per_task:
        raise ValueError("measured_image_variance needs at least one task")
    parts = []
    for x in per_task:
        x = np.asarray(x, dtype=float)
        if x.ndim != 1 or x.size < 2:
            raise ValueError("each task needs a 1-D array of at least 2 per-image values")
        parts.append(x.var(ddof=1) / x.size)
    return float(np.sum(parts) / len(parts) ** 2)


def holm(pvalues: Sequence[float], *, alpha: float = FAMILY_ALPHA) -> tuple[list[float], list[float]]:
    """Holm's step-down rule over a family of tests: (interval level per test, Holm-adjusted p-value per test), in
    the order given.

    Sorted by p, the j-th smallest (j = 1..m) is tested at alpha / (m - j + 1) while every smaller one was
    rejected; from the first one that is not rejected on, every later test keeps that same level (so its interval
    also contains its null: Holm stops there). The interval level of a test is 1 minus its alpha; a test is
    rejected at the family level alpha exactly when its interval at that level excludes its null. NaN p-values
    (too few runs) come last and get the last level. Adjusted p: max over the smaller ones of (m - j + 1) p_(j),
    capped at 1.
    """
    p = [math.inf if not math.isfinite(x) else float(x) for x in pvalues]
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    levels, adjusted = [math.nan] * m, [math.nan] * m
    frozen, running = None, 0.0
    for j, i in enumerate(order):
        a_j = alpha / (m - j)
        if frozen is None and not p[i] <= a_j:
            frozen = a_j
        levels[i] = 1 - (frozen if frozen is not None else a_j)
        running = max(running, min(1.0, (m - j) * p[i]))
        adjusted[i] = running if math.isfinite(p[i]) else math.nan
    return levels, adjusted


def judge_effect(effect: Interval | Effect, *, sesoi: float = SESOI) -> str:
    """The one verdict on an effect's interval (06), every number in one unit (accuracy fractions there):

    no difference: the interval lies inside (-sesoi, +sesoi) (any effect is smaller than the smallest of
    interest; checked first, so a tiny but 'significant' effect is no difference); reproduced: the interval lies
    above 0; not reproduced: it lies below 0; inconclusive otherwise (it contains 0 and reaches beyond +-sesoi,
    or an end is NaN).
    """
    low, high = float(effect.low), float(effect.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    if -sesoi < low and high < sesoi:
        return NO_DIFFERENCE
    if low > 0:
        return REPRODUCED
    if high < 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def judge_noninferior(effect: Interval | Effect, *, margin: float) -> str:
    """Verdict on a 'no worse than the reference by more than margin' claim (e.g. TIMA's AutoAttack gap in excess
    of TeCoA's): reproduced if the interval's upper end is at most margin, not reproduced if its lower end is above
    margin, inconclusive otherwise (NaN ends included)."""
    low, high = float(effect.low), float(effect.high)
    if math.isfinite(high) and high <= margin:
        return REPRODUCED
    if math.isfinite(low) and low > margin:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def _combine(parts: Iterable[bool | None]) -> str:
    """:data:`RULE` on sub-criteria (True: holds, False: fails, None: undecided, e.g. its interval straddles)."""
    parts = list(parts)
    if not parts:
        raise ValueError("a verdict needs at least one part")
    if all(p is True for p in parts):
        return REPRODUCED
    if any(p is False for p in parts):
        return MIXED if any(p is True for p in parts) else NOT_REPRODUCED
    return INCONCLUSIVE


# ---------------------------------------------------------------------------------- 00: the mini CLIP is fit
def _every_unit_above(intervals: Sequence[Interval], threshold: float) -> tuple[int, str]:
    """(index of the lowest estimate, verdict): judge_ahead over every unit's interval against threshold."""
    return int(np.argmin([iv.estimate for iv in intervals])), judge_ahead(intervals, threshold=threshold)


def findings_mini_clip(robustness: pd.DataFrame, *, clean_factor: float = 3.0, eps_half: float = 4.0,
                       n: int | None = None, level: float = 0.95, notebook: str = "00",
                       figure: str = "figures/00_mini_clip_robustness.png") -> list[Finding]:
    """Precondition (not a paper claim): clean zero-shot accuracy >= clean_factor x chance on every task, and PGD
    at eps_half/255 removes at least half of it. Columns: task, eps (1/255 units, 0 = clean), accuracy (fraction),
    chance (fraction), n (images; or pass n=)."""
    need = {"task", "eps", "accuracy", "chance"} | (set() if n is not None else {"n"})
    _require(robustness, need, "findings_mini_clip")
    rows = []
    for task, g in robustness.groupby("task", sort=False):
        acc = g.set_index("eps")["accuracy"]
        if 0.0 not in acc.index or eps_half not in acc.index:
            raise ValueError(f"task {task!r} needs rows at eps 0 and eps {eps_half:g}")
        size = int(n if n is not None else g["n"].iloc[0])
        clean = wilson_ci(round(acc[0.0] * size), size, level=level)
        robust = wilson_ci(round(acc[eps_half] * size), size, level=level)
        chance = float(g["chance"].iloc[0])
        rows.append({"task": task, "chance": chance, "clean": clean, "robust": robust, "n": size})
    # (1) clean accuracy over chance, every task
    ratio = [Interval(r["clean"].estimate / r["chance"], r["clean"].low / r["chance"], r["clean"].high / r["chance"])
             for r in rows]
    worst, v1 = _every_unit_above(ratio, clean_factor)
    f1 = Finding(
        id="00_clean_over_chance", notebook=notebook,
        claim=f"Precondition (not a paper claim): the mini CLIP's clean zero-shot accuracy is at least "
              f"{clean_factor:g}x chance on every task.",
        criterion=f"for every task the Wilson {level:.0%} interval of clean accuracy / chance lies above "
                  f"{clean_factor:g}; each task is a part (fails if its interval lies below); {RULE}.",
        paper="", ours=f"worst task {rows[worst]['task']}: {_ci(ratio[worst], 1)} x chance",
        estimate=ratio[worst].estimate, ci_low=ratio[worst].low, ci_high=ratio[worst].high, verdict=v1,
        figure=figure,
        detail="; ".join(f"{r['task']} {iv.estimate:.1f}x (clean {r['clean'].estimate:.3f}, n {r['n']})"
                         for r, iv in zip(rows, ratio)))
    # (2) PGD at eps_half removes at least half of clean accuracy (clean treated as fixed, robust's Wilson interval)
    removed = [Interval(1 - r["robust"].estimate / r["clean"].estimate, 1 - r["robust"].high / r["clean"].estimate,
                        1 - r["robust"].low / r["clean"].estimate) for r in rows]
    worst, v2 = _every_unit_above(removed, 0.5)
    f2 = Finding(
        id="00_pgd_removes_half", notebook=notebook,
        claim=f"Precondition (not a paper claim): PGD at {eps_half:g}/255 removes at least half of the mini CLIP's "
              f"clean accuracy on every task.",
        criterion=f"for every task 1 - robust/clean lies above 0.5 over the Wilson {level:.0%} interval of the "
                  f"robust accuracy (clean accuracy taken as fixed); each task is a part (fails if it lies below "
                  f"0.5); {RULE}.",
        paper="", ours=f"worst task {rows[worst]['task']}: {_ci(removed[worst], 2)} removed",
        estimate=removed[worst].estimate, ci_low=removed[worst].low, ci_high=removed[worst].high, verdict=v2,
        figure=figure,
        detail="; ".join(f"{r['task']} {r['clean'].estimate:.3f} -> {r['robust'].estimate:.3f} "
                         f"({iv.estimate:.0%} removed)" for r, iv in zip(rows, removed)))
    return [f1, f2]


# ------------------------------------------------------------------------------- 01: a stable margin offset
def _wide_margins(sweep: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Long sweep table -> margins (sample x eps) and each sample's label."""
    _require(sweep, {"sample", "eps", "label", "margin"}, "margin-offset findings")
    wide = sweep.pivot(index="sample", columns="eps", values="margin").sort_index()
    labels = sweep.drop_duplicates("sample").set_index("sample")["label"].reindex(wide.index)
    return wide, labels


def offset_stability(sweep: pd.DataFrame, *, unit: Literal["sample", "class"] = "sample", threshold: float = 0.5,
                     include_clean: bool = False, n_boot: int = 2000, level: float = 0.95,
                     seed: int = 0) -> pd.DataFrame:
    """Per eps pair (small < large): rel_spread = std(offset) / std(small-eps margin) over samples, or over class
    means (unit='class'), with its bootstrap CI over the units, slope and Pearson r of the large-on-small fit, and
    `holds` ('yes' CI below threshold, 'no' CI above, 'unclear'). Sweep columns: sample, eps, label, margin."""
    wide, labels = _wide_margins(sweep)
    if unit == "class":
        wide = wide.groupby(labels.to_numpy()).mean()
    elif unit != "sample":
        raise ValueError(f"unit must be 'sample' or 'class', got {unit!r}")
    eps = [e for e in sorted(wide.columns) if include_clean or e > 0]
    rows = []
    for i, small in enumerate(eps):
        for large in eps[i + 1:]:
            a, b = wide[small].to_numpy(float), wide[large].to_numpy(float)
            ok = np.isfinite(a) & np.isfinite(b)
            a, b = a[ok], b[ok]
            iv = bootstrap_rel_spread_ci(a, b, n_boot=n_boot, level=level, seed=seed)
            fit = stats.linregress(a, b)
            side = _side(iv.low, iv.high, threshold)
            rows.append({"eps_small": small, "eps_large": large, "unit": unit, "n_units": len(a),
                         "offset_mean": float((b - a).mean()), "rel_spread": iv.estimate, "ci_low": iv.low,
                         "ci_high": iv.high, "slope": float(fit.slope), "pearson_r": float(fit.rvalue),
                         "holds": {"below": "yes", "above": "no"}.get(side, "unclear")})
    return pd.DataFrame(rows)


def offset_stability_by_class(sweep: pd.DataFrame, *, eps_small: float = 1.0, eps_large: float = 4.0,
                              threshold: float = 0.5, n_boot: int = 1000, level: float = 0.95,
                              seed: int = 0) -> pd.DataFrame:
    """Per class: the per-sample rel_spread between eps_small and eps_large within that class, with a bootstrap CI
    over its samples and `holds` (yes / no / unclear). Sweep columns: sample, eps, label, margin."""
    wide, labels = _wide_margins(sweep)
    rows = []
    for label, idx in wide.groupby(labels.to_numpy()).groups.items():
        a, b = wide.loc[idx, eps_small].to_numpy(float), wide.loc[idx, eps_large].to_numpy(float)
        iv = bootstrap_rel_spread_ci(a, b, n_boot=n_boot, level=level, seed=seed)
        side = _side(iv.low, iv.high, threshold)
        rows.append({"label": label, "n": len(a), "offset_mean": float((b - a).mean()), "rel_spread": iv.estimate,
                     "ci_low": iv.low, "ci_high": iv.high,
                     "holds": {"below": "yes", "above": "no"}.get(side, "unclear")})
    return pd.DataFrame(rows)


def offset_by_model(per_model: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean and std of the per-sample offset (logits) and their ratio offset_cv = std / |mean| (how
    variable the shift is relative to its size). Columns: model, offset_mean, offset_std (as 05_findings_per_model)."""
    _require(per_model, {"model", "offset_mean", "offset_std"}, "offset_by_model")
    out = per_model[["model", "offset_mean", "offset_std"]].copy()
    out["offset_cv"] = out["offset_std"] / out["offset_mean"].abs()
    return out.reset_index(drop=True)


def finding_margin_offset(sweep: pd.DataFrame, *, eps_small: float = 1.0, eps_large: float = 4.0,
                          threshold: float = 0.5, per_model: pd.DataFrame | None = None, n_boot: int = 2000,
                          level: float = 0.95, seed: int = 0, notebook: str = "01",
                          figure: str = "figures/01_margin_offset.png") -> Finding:
    """TIMA finding 1 (a stable margin offset between small and large eps) from the long sweep table of
    metrics.margin_sweep. Columns: sample, eps (1/255 units), label, margin (logits). Headline pair eps_small ->
    eps_large; the detail says for which other eps pairs and classes the criterion holds, and, given per_model
    (columns model, offset_mean, offset_std), how the offset varies across models (reported, not in the verdict)."""
    have = set(sweep["eps"].astype(float))
    if eps_small not in have or eps_large not in have:
        raise ValueError(f"the sweep has no eps pair ({eps_small:g}, {eps_large:g}); it has eps {sorted(have)}")
    per_sample = offset_stability(sweep, unit="sample", threshold=threshold, n_boot=n_boot, level=level, seed=seed)
    per_class = offset_stability(sweep, unit="class", threshold=threshold, n_boot=n_boot, level=level, seed=seed)
    by_class = offset_stability_by_class(sweep, eps_small=eps_small, eps_large=eps_large, threshold=threshold,
                                         n_boot=min(n_boot, 1000), level=level, seed=seed)

    def pick(table: pd.DataFrame) -> pd.Series:
        hit = table[(table.eps_small == eps_small) & (table.eps_large == eps_large)]
        if hit.empty:
            raise ValueError(f"the sweep has no eps pair ({eps_small:g}, {eps_large:g})")
        return hit.iloc[0]

    s, c = pick(per_sample), pick(per_class)
    verdict = _combine({"yes": True, "no": False}.get(r.holds) for r in (s, c))
    iv_s, iv_c = Interval(s.rel_spread, s.ci_low, s.ci_high), Interval(c.rel_spread, c.ci_low, c.ci_high)

    def pairs_where(table: pd.DataFrame, flag: str) -> str:
        got = table[table.holds == flag]
        return ", ".join(f"{a:g}->{b:g}" for a, b in zip(got.eps_small, got.eps_large)) or "none"

    n_cls = len(by_class)
    detail = (f"per-sample criterion holds for eps pairs: {pairs_where(per_sample, 'yes')}; fails for: "
              f"{pairs_where(per_sample, 'no')}. Class-mean criterion holds for: {pairs_where(per_class, 'yes')}; "
              f"fails for: {pairs_where(per_class, 'no')}. Within single classes at {eps_small:g}->{eps_large:g}: "
              f"holds in {int((by_class.holds == 'yes').sum())}/{n_cls} classes, fails in "
              f"{int((by_class.holds == 'no').sum())}, unclear in {int((by_class.holds == 'unclear').sum())}. "
              f"Mean offset {s.offset_mean:+.2f} logits; fit slope {s.slope:.2f}, Pearson r {s.pearson_r:.2f} "
              f"(a constant shift has slope 1). Images from one seed; CIs resample samples or classes.")
    if per_model is not None and len(per_model):
        m = offset_by_model(per_model)
        means = m["offset_mean"]
        detail += (f" Across {len(m)} models the mean offset runs {means.min():+.2f} to {means.max():+.2f} logits "
                   f"(std/|mean| across models {means.std(ddof=1) / abs(means.mean()):.2f}); within a model the "
                   f"per-sample offset's std/|mean| is {m.offset_cv.min():.2f} to {m.offset_cv.max():.2f}.")
    return Finding(
        id="01_margin_offset", notebook=notebook,
        claim="TIMA finding 1: logit margins keep a stable offset between small and large adversarial "
              "perturbations.",
        criterion=(f"our reading: margin(eps {eps_large:g}) = margin(eps {eps_small:g}) + a roughly constant shift. "
                   f"Statistic rel_spread = std(offset) / std(margin at eps {eps_small:g}) (0 for a constant shift, "
                   f"~1.4 for unrelated margins); stable means rel_spread < {threshold:g} (with slope 1, the small-eps "
                   f"margin then explains >= {1 / (1 + threshold ** 2):.0%} of the large-eps variance), its "
                   f"{level:.0%} bootstrap CI entirely below {threshold:g}. Checked per sample (over images) and per "
                   f"class (over class-mean margins), each failing if its CI lies above {threshold:g}; {RULE}."),
        paper="", ours=f"rel_spread {_ci(iv_s)} per sample, {_ci(iv_c)} per class (eps {eps_small:g}->{eps_large:g})",
        estimate=float(s.rel_spread), ci_low=float(s.ci_low), ci_high=float(s.ci_high), verdict=verdict,
        figure=figure, detail=detail)


# -------------------------------------------------------------------- 02: margin vs inter-class similarity
def similarity_correlation_by_class(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per true class: Spearman rho and Pearson r of margin vs similarity over its pairs. Columns: true,
    similarity, margin."""
    _require(pairs, {"true", "similarity", "margin"}, "similarity_correlation_by_class")
    rows = []
    for label, g in pairs.groupby("true", sort=False):
        x, y = g["similarity"].to_numpy(float), g["margin"].to_numpy(float)
        rows.append({"true": label, "n_pairs": len(g), "spearman_rho": _correlation(x, y, "spearman"),
                     "pearson_r": _correlation(x, y, "pearson")})
    return pd.DataFrame(rows)


def finding_margin_similarity(pairs: pd.DataFrame, *, paper_pearson: float = -0.685,
                              paper_spearman: float = -0.651, unit: Literal["class", "pair"] = "class",
                              n_boot: int = 2000, level: float = 0.95, seed: int = 0, notebook: str = "02",
                              figure: str = "figures/02_margin_vs_similarity.png") -> Finding:
    """TIMA finding 2 (margin correlates negatively with inter-class text similarity) from the pair table.
    Columns: true, other, similarity (cosine), margin (mean z_true - z_other over class-`true` images)."""
    _require(pairs, {"true", "similarity", "margin"}, "finding_margin_similarity")
    if unit not in ("class", "pair"):
        raise ValueError(f"unit must be 'class' or 'pair', got {unit!r}")
    x, y = pairs["similarity"].to_numpy(float), pairs["margin"].to_numpy(float)
    groups = pairs["true"].to_numpy() if unit == "class" else None
    rho = bootstrap_correlation_ci(x, y, method="spearman", groups=groups, n_boot=n_boot, level=level, seed=seed)
    r = bootstrap_correlation_ci(x, y, method="pearson", groups=groups, n_boot=n_boot, level=level, seed=seed)
    naive = fisher_z_ci(r.estimate, len(x), level=level)
    verdict = _combine(_part(iv, 0.0, claimed="below") for iv in (rho, r))
    side = _side(rho.low, rho.high, paper_spearman)
    strength = {"below": "stronger than", "above": "weaker than"}.get(side, "consistent with")
    per_class = similarity_correlation_by_class(pairs)
    neg = int((per_class.spearman_rho < 0).sum())
    where = "inside" if side == "straddles" else "outside"
    units = "true classes (pairs of one class share its images)" if unit == "class" else "pairs"
    detail = (f"Spearman {strength} the paper's {paper_spearman} (paper value {where} our CI). Pearson {_ci(r)} "
              f"(Fisher-z CI treating the {len(x)} pairs as independent: [{naive.low:.2f}, {naive.high:.2f}]). "
              f"Within single true classes, Spearman rho < 0 in {neg}/{len(per_class)} classes (median "
              f"{per_class.spearman_rho.median():.2f}). CI by bootstrap over {units}.")
    return Finding(
        id="02_margin_similarity", notebook=notebook,
        claim="TIMA finding 2: the logit margin correlates negatively with inter-class text similarity.",
        criterion=(f"Spearman rho and Pearson r of (similarity, margin) over ordered class pairs, each with a "
                   f"{level:.0%} bootstrap CI over {'true classes' if unit == 'class' else 'pairs'}; each part holds if its "
                   f"CI lies below 0 and fails if above; {RULE}. Strength is compared "
                   f"with the paper's Spearman {paper_spearman} but does not decide the verdict."),
        paper=f"Spearman {paper_spearman}, Pearson {paper_pearson}",
        ours=f"Spearman {_ci(rho)}, Pearson {_ci(r)}",
        estimate=rho.estimate, ci_low=rho.low, ci_high=rho.high, verdict=verdict, figure=figure, detail=detail)


# ----------------------------------------------------------------- 03: text embeddings and semantic consistency
def findings_text_structure(structure: pd.DataFrame, *, iat: str = "IAT (SC-MHE + IAKD)",
                            original: str = "original", existing: Sequence[str] = ("LAAT expansion", "MHE"),
                            rho_floor: float = 0.95, level: float = 0.95, notebook: str = "03",
                            figure: str = "figures/03_text_structure.png") -> list[Finding]:
    """TIMA finding 3 and IAT, paired over datasets (t-intervals). Columns: text (which embeddings), dataset,
    min_distance, mean_distance (Euclidean, unit vectors), consistency_rho (Spearman vs the original's pairwise
    similarities). One finding per existing method in `existing`, then 'IAT spreads' and 'IAT keeps consistency'."""
    _require(structure, {"text", "dataset", "min_distance", "mean_distance", "consistency_rho"},
             "findings_text_structure")
    missing = {iat, original, *existing} - set(structure["text"])
    if missing:
        raise ValueError(f"no rows for text side(s) {sorted(missing)}; have {sorted(set(structure['text']))}")

    def wide(col: str) -> pd.DataFrame:
        return structure.pivot_table(index="dataset", columns="text", values=col, aggfunc="mean", sort=False)

    rho, dmin, dmean = wide("consistency_rho"), wide("min_distance"), wide("mean_distance")
    out = []
    for name in existing:
        both = rho[[iat, name]].dropna()
        gap = t_interval(both[iat] - both[name], level=level)
        level_m = t_interval(both[name], level=level)
        below_iat = _part(gap, 0.0)
        below_floor = _part(level_m, rho_floor, claimed="below")
        verdict = _combine([below_iat, below_floor])
        key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        out.append(Finding(
            id=f"03_{key}_disrupts_consistency", notebook=notebook,
            claim=f"TIMA finding 3: an existing way of adjusting text embeddings ({name}) disrupts the semantic "
                  f"consistency of the pre-trained text embeddings.",
            criterion=(f"consistency rho = Spearman between the pairwise class similarities before and after; "
                       f"'disrupts' means (a) rho below IAT's (paired over datasets, {level:.0%} t-interval of the "
                       f"gap above 0) and (b) rho below the {rho_floor:g} that counts as 'keeps consistency' for "
                       f"IAT (t-interval below it); each fails if its interval lies on the other side; {RULE}."),
            paper="", ours=f"rho {_ci(level_m, 3)}; IAT minus it {_ci(gap, 3, signed=True)}",
            estimate=level_m.estimate, ci_low=level_m.low, ci_high=level_m.high, verdict=verdict, figure=figure,
            detail="per dataset rho " + ", ".join(f"{d} {v:.3f} (IAT {w:.3f})"
                                                 for d, v, w in zip(both.index, both[name], both[iat]))
                   + f"; {len(both)} datasets, one tuning run each."))
    gains = {col: t_interval(tab[iat] - tab[original], level=level)
             for col, tab in (("min", dmin), ("mean", dmean))}
    spread = [_part(iv, 0.0) for iv in gains.values()]
    out.append(Finding(
        id="03_iat_spreads_classes", notebook=notebook,
        claim="IAT increases the inter-class distance of the text embeddings over the original ones.",
        criterion=(f"paired over datasets, the {level:.0%} t-interval of IAT minus original lies above 0, for the "
                   f"minimum and for the mean inter-class distance (a part fails if its interval lies below 0); "
                   f"{RULE}."),
        paper="", ours=f"min {_ci(gains['min'], 3, signed=True)}, mean {_ci(gains['mean'], 3, signed=True)}",
        estimate=gains["min"].estimate, ci_low=gains["min"].low, ci_high=gains["min"].high,
        verdict=_combine(spread), figure=figure,
        detail="per dataset (min, mean distance change): " + ", ".join(
            f"{d} {dmin.loc[d, iat] - dmin.loc[d, original]:+.3f} / {dmean.loc[d, iat] - dmean.loc[d, original]:+.3f}"
            for d in dmin.index)))
    keep = t_interval(rho[iat].dropna(), level=level)
    out.append(Finding(
        id="03_iat_keeps_consistency", notebook=notebook,
        claim="IAT keeps the semantic consistency of the pre-trained text embeddings.",
        criterion=(f"mean consistency rho over datasets with its {level:.0%} t-interval above {rho_floor:g} "
                   f"(reproduced), below it (not reproduced), straddling it (inconclusive)."),
        paper="", ours=f"rho {_ci(keep, 3)}",
        estimate=keep.estimate, ci_low=keep.low, ci_high=keep.high,
        verdict=judge_ahead([keep], threshold=rho_floor), figure=figure,
        detail="per dataset rho " + ", ".join(f"{d} {v:.3f}" for d, v in rho[iat].dropna().items())
               + f"; lowest {rho[iat].min():.3f}."))
    return out


# ------------------------------------------------------------------ 04/05: TIMA's balance against the baselines
def correctness_masks(rows: pd.DataFrame, *, model: str, attack: str, eps: float) -> dict[str, np.ndarray]:
    """Per zero-shot dataset, the per-image correctness (n,) of one model under one attack and eps (clean: attack
    'clean', eps 0). Columns: model, dataset, attack, eps, n, correct (hex of packed bits), zero_shot."""
    _require(rows, {"model", "dataset", "attack", "eps", "n", "correct", "zero_shot"}, "correctness_masks")
    sel = rows[(rows.model == model) & (rows.attack == attack) & np.isclose(rows.eps.astype(float), eps)
               & rows.zero_shot.astype(bool)]
    sel = sel.sort_values("n").drop_duplicates("dataset", keep="last")  # the largest run of each dataset
    return {d: unpack_mask(c, int(n)) for d, c, n in zip(sel.dataset, sel.correct, sel.n)}


def paired_accuracy_difference(rows: pd.DataFrame, *, model_a: str, model_b: str, attack: str, eps: float,
                               n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[Interval, pd.Series]:
    """Accuracy of model_a minus model_b (fraction; mean over the zero-shot datasets both have) with a paired
    bootstrap CI over images (stratified by dataset), and the per-dataset differences. Columns as
    correctness_masks."""
    a = correctness_masks(rows, model=model_a, attack=attack, eps=eps)
    b = correctness_masks(rows, model=model_b, attack=attack, eps=eps)
    datasets = [d for d in a if d in b]
    if not datasets:
        raise ValueError(f"no zero-shot dataset has {attack} at eps {eps:g} for both {model_a} and {model_b}")
    ma, mb, strata, per = [], [], [], {}
    for d in datasets:
        n = min(len(a[d]), len(b[d]))  # the first n images are the same images in both runs
        ma.append(a[d][:n]), mb.append(b[d][:n]), strata.append(np.full(n, d, dtype=object))
        per[d] = float(a[d][:n].mean() - b[d][:n].mean())
    iv = paired_bootstrap_diff_ci(np.concatenate(ma), np.concatenate(mb), strata=np.concatenate(strata),
                                  n_boot=n_boot, level=level, seed=seed)
    return iv, pd.Series(per, name=f"{model_a} - {model_b}")


def findings_tima_balance(rows: pd.DataFrame, *, tima: str = "tima", baselines: Sequence[str] = ("tecoa", "pmg_aft"),
                          attack: str = "pgd10", eps_small: float = 1.0, eps_large: float = 4.0,
                          clean_tolerance: float = 1.0, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                          notebook: str = "05", figure: str = "figures/05_tradeoff.png") -> list[Finding]:
    """TIMA's headline claim (better balance of zero-shot robustness and clean accuracy), one finding per baseline:
    paired per-image differences TIMA - baseline at clean, eps_small and eps_large (1/255 units), mean over the
    zero-shot datasets, in accuracy points. Columns: model, dataset, attack, eps, n, correct, zero_shot (optional
    model_label for the text). clean_tolerance: points of clean accuracy TIMA may lose beyond noise (the verdict is
    :func:`judge_ahead` on the eps_small and eps_large intervals, given in fractions)."""
    labels = (dict(zip(rows.model, rows.model_label)) if "model_label" in rows.columns else {})
    other_eps = sorted({float(e) for e in rows.loc[rows.attack == attack, "eps"]} - {eps_small, eps_large})
    out = []
    for base in baselines:
        kw = dict(model_a=tima, model_b=base, n_boot=n_boot, level=level, seed=seed)
        clean, _ = paired_accuracy_difference(rows, attack="clean", eps=0.0, **kw)
        small, _ = paired_accuracy_difference(rows, attack=attack, eps=eps_small, **kw)
        large, per_ds = paired_accuracy_difference(rows, attack=attack, eps=eps_large, **kw)
        verdict = judge_ahead([small, large], clean=clean, clean_tolerance=clean_tolerance / 100)  # points -> fraction
        rest = []
        for e in other_eps:
            try:
                iv, _ = paired_accuracy_difference(rows, attack=attack, eps=e, **kw)
                rest.append(f"eps {e:g} {_ci(iv, 1, 100, signed=True)}")
            except ValueError:
                continue
        tname, bname = labels.get(tima, tima), labels.get(base, base)
        n_img = sum(len(v) for v in correctness_masks(rows, model=tima, attack=attack, eps=eps_large).values())
        out.append(Finding(
            id=f"{notebook}_tima_vs_{base}", notebook=notebook,
            claim=f"TIMA balances zero-shot robustness and clean accuracy better than {bname}.",
            criterion=(f"{tname} minus {bname}, accuracy points, mean over zero-shot datasets, paired {level:.0%} "
                       f"bootstrap CI over images (within datasets): reproduced if ahead at eps {eps_small:g} and "
                       f"{eps_large:g} ({attack}) with CIs above 0 and clean CI upper end >= -{clean_tolerance:g}; "
                       f"a part fails if {bname} is ahead there (CI below 0); {RULE}; a clean CI upper end below "
                       f"-{clean_tolerance:g} makes a reproduced mixed."),
            paper="", ours=(f"TIMA - {bname}, points: eps {eps_small:g} {_ci(small, 1, 100, signed=True)}, "
                            f"eps {eps_large:g} {_ci(large, 1, 100, signed=True)}, "
                            f"clean {_ci(clean, 1, 100, signed=True)}"),
            estimate=large.estimate * 100, ci_low=large.low * 100, ci_high=large.high * 100, verdict=verdict,
            figure=figure,
            detail=(f"other eps: {'; '.join(rest) or 'none'}. Per dataset at eps {eps_large:g}: "
                    + ", ".join(f"{d} {v * 100:+.1f}" for d, v in per_ds.items())
                    + f". About {n_img} images per model; {SEED_NOTE}.")))
    return out


def finding_onehot_loses_zero_shot(rows: pd.DataFrame, *, onehot: str = "onehot_at", reference: str = "tecoa",
                                    others: Sequence[str] = ("coadv", "tecoa_partial"), attack: str = "pgd10",
                                    eps: float = 4.0, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                                    notebook: str = "05", figure: str = "figures/05_tradeoff.png") -> Finding:
    """TeCoA's motivating claim: adversarial training with one-hot labels through a linear head (the image tower
    evaluated zero-shot afterwards) loses zero-shot clean and robust accuracy against TeCoA. Paired per-image
    differences reference - onehot at clean and at eps (1/255 units), mean over the zero-shot datasets, fractions;
    the verdict is :func:`judge_ahead` on both intervals (TeCoA ahead at both: reproduced). `others` present in
    rows (CoAdv, partial fine-tuning) are reported against TeCoA in the detail, without a verdict."""
    labels = (dict(zip(rows.model, rows.model_label)) if "model_label" in rows.columns else {})
    kw = dict(model_a=reference, model_b=onehot, n_boot=n_boot, level=level, seed=seed)
    clean, _ = paired_accuracy_difference(rows, attack="clean", eps=0.0, **kw)
    robust, per_ds = paired_accuracy_difference(rows, attack=attack, eps=eps, **kw)
    rname, oname = labels.get(reference, reference), labels.get(onehot, onehot)
    rest = []
    for other in [m for m in others if m in set(rows.model)]:
        c, _ = paired_accuracy_difference(rows, model_a=reference, model_b=other, attack="clean", eps=0.0,
                                          n_boot=n_boot, level=level, seed=seed)
        r, _ = paired_accuracy_difference(rows, model_a=reference, model_b=other, attack=attack, eps=eps,
                                          n_boot=n_boot, level=level, seed=seed)
        rest.append(f"{rname} - {labels.get(other, other)}: clean {_ci(c, 1, 100, signed=True)}, "
                    f"eps {eps:g} {_ci(r, 1, 100, signed=True)}")
    return Finding(
        id=f"{notebook}_onehot_at_loses_zero_shot", notebook=notebook,
        claim=(f"Adversarial training with one-hot labels ({oname}) loses zero-shot clean and robust accuracy "
               f"against {rname} (TeCoA's motivation)."),
        criterion=(f"{rname} minus {oname}, accuracy points, mean over the zero-shot datasets, paired {level:.0%} "
                   f"bootstrap CI over images (within datasets), at clean and at eps {eps:g} ({attack}): each part "
                   f"holds if its CI lies above 0 and fails if below; {RULE}."),
        paper="TeCoA README: Standard Adv. Training w/ Finetuning 10.62 robust / 18.49 clean vs TeCoA 38.18 / 55.97",
        ours=(f"{rname} - {oname}, points: clean {_ci(clean, 1, 100, signed=True)}, "
              f"eps {eps:g} {_ci(robust, 1, 100, signed=True)}"),
        estimate=robust.estimate * 100, ci_low=robust.low * 100, ci_high=robust.high * 100,
        verdict=judge_ahead([clean, robust]), figure=figure,
        detail=("Per dataset at eps " + f"{eps:g}: " + ", ".join(f"{d} {v * 100:+.1f}" for d, v in per_ds.items())
                + (". " + "; ".join(rest) if rest else "") + f". {SEED_NOTE}."))


def finding_prompting_vs_finetuning(rows: pd.DataFrame, *, pairs: Sequence[tuple[str, str]] = (
        ("tecoa", "tecoa_vp"), ("pmg_aft", "pmg_aft_vp"), ("tima", "tima_vp")), attack: str = "pgd10",
        eps: float = 4.0, n_boot: int = 2000, level: float = 0.95, seed: int = 0, notebook: str = "05",
        figure: str = "figures/05_tradeoff.png") -> Finding:
    """The baselines' claim (TeCoA, PMG-AFT): visual prompting is less robust and less accurate than fine-tuning.
    For each (fine-tuned, prompted) pair present in rows: paired per-image differences fine-tuned - prompted at clean
    and at eps (1/255 units), mean over the zero-shot datasets, fractions; the verdict is :func:`judge_ahead` on every
    interval (fine-tuning ahead everywhere: reproduced; prompting ahead anywhere: not reproduced)."""
    labels = (dict(zip(rows.model, rows.model_label)) if "model_label" in rows.columns else {})
    present = [(a, b) for a, b in pairs if {a, b} <= set(rows.model)]
    if not present:
        raise ValueError(f"no (fine-tuned, prompted) pair of {list(pairs)} is in the rows")
    intervals, parts = [], []
    for a, b in present:
        kw = dict(model_a=a, model_b=b, n_boot=n_boot, level=level, seed=seed)
        clean, _ = paired_accuracy_difference(rows, attack="clean", eps=0.0, **kw)
        robust, _ = paired_accuracy_difference(rows, attack=attack, eps=eps, **kw)
        intervals += [clean, robust]
        parts.append(f"{labels.get(a, a)} - {labels.get(b, b)}: clean {_ci(clean, 1, 100, signed=True)}, "
                     f"eps {eps:g} {_ci(robust, 1, 100, signed=True)}")
    head = intervals[1]  # the first pair's robust difference (TeCoA's, when present)
    return Finding(
        id=f"{notebook}_prompting_vs_finetuning", notebook=notebook,
        claim="Visual prompting (CLIP frozen) is less robust and less accurate zero-shot than fine-tuning.",
        criterion=(f"for each method trained both ways ({', '.join(a for a, _ in present)}): fine-tuned minus "
                   f"prompted, accuracy points, mean over the zero-shot datasets, paired {level:.0%} bootstrap CI "
                   f"over images, at clean and at eps {eps:g} ({attack}): each part holds if its CI lies above 0 and "
                   f"fails if below; {RULE}."),
        paper="TeCoA README: TeCoA w/ Prompting 32.00 robust / 53.00 clean vs fine-tuning 38.18 / 55.97",
        ours="; ".join(parts), estimate=head.estimate * 100, ci_low=head.low * 100, ci_high=head.high * 100,
        verdict=judge_ahead(intervals), figure=figure,
        detail=f"The estimate is the first pair's difference at eps {eps:g}. {SEED_NOTE}.",
        scope=(f"{default_scope(notebook)}; the direction only: the prompts are TeCoA's recipe at our budget on a "
               "32 px ResNet tower, so the size of the gaps is not comparable with TeCoA's"))


# ------------------------------------------------------------------------------------------------ storage
def _results_dir(results_dir: str | Path | None) -> Path:
    """The results folder: the argument, else paths.RESULTS_DIR (read at call time)."""
    return Path(results_dir) if results_dir is not None else Path(paths.RESULTS_DIR)


def findings_path(notebook: str, *, results_dir: str | Path | None = None) -> Path:
    """results/NN_findings.json of a notebook ('01' or a stem such as '01_margin_offset')."""
    nn = str(notebook)[:2]
    if not re.fullmatch(r"\d\d", nn):
        raise ValueError(f"notebook {notebook!r} must start with two digits")
    return _results_dir(results_dir) / f"{nn}{FINDINGS_SUFFIX}"


def write_findings(findings: Sequence[Finding], notebook: str, *, config: dict,
                   results_dir: str | Path | None = None) -> Path:
    """Write results/NN_findings.json atomically: {"notebook", "code_version", "config", "findings": [...]}."""
    nn = str(notebook)[:2]
    ids = [f.id for f in findings]
    if len(set(ids)) != len(ids):
        raise ValueError(f"finding ids must be unique, got {ids}")
    for f in findings:
        if f.notebook != nn:
            raise ValueError(f"finding {f.id!r} belongs to notebook {f.notebook}, not {nn}")
    scope = default_scope(nn, config)
    payload = {"notebook": nn, "code_version": code_version(), "config": config,
               "findings": [(f if f.scope else replace(f, scope=scope)).to_dict() for f in findings]}
    path = findings_path(nn, results_dir=results_dir)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str, allow_nan=False) + "\n")
    return path


def default_scope(notebook: str, config: Mapping | None = None) -> str:
    """What a notebook's verdicts cover (the README's scope column): world, model, and which sources of variance
    their intervals hold; seed counts from the notebook's config where it has train_seeds."""
    seeds = len((config or {}).get("train_seeds") or [])
    world_model = "mini world, mini CLIP"
    if notebook in ("00", "01", "02"):
        return f"{world_model} (pre-trained, no training); intervals over test images or classes"
    if notebook == "03":
        return f"{world_model}; one IAT tuning per task; intervals over the tasks"
    if notebook in ("04", "05"):
        return f"{world_model}; one training seed per model; intervals over test images"
    if notebook == "06":
        return (f"{world_model}; {seeds} training seeds in each of two study runs (CPU, H100); intervals over seeds "
                "and test images")
    if notebook == "07":
        return f"mini world, ResNet trained from scratch; {seeds} training seeds; intervals over seeds, images fixed"
    raise ValueError(f"no default scope for notebook {notebook!r}")


def read_findings(notebook: str, *, results_dir: str | Path | None = None) -> list[dict]:
    """The findings (dicts with the Finding fields) stored in results/NN_findings.json."""
    payload = json.loads(findings_path(notebook, results_dir=results_dir).read_text())
    names = {f.name for f in fields(Finding)}
    for item in payload["findings"]:
        if not names <= set(item):
            raise ValueError(f"finding {item.get('id')!r} lacks fields {sorted(names - set(item))}")
    return payload["findings"]


def findings_frame(findings: Sequence[Finding | dict]) -> pd.DataFrame:
    """Display table of findings, indexed by id: claim, paper, ours, verdict."""
    items = [f.to_dict() if isinstance(f, Finding) else dict(f) for f in findings]
    frame = pd.DataFrame(items, columns=[f.name for f in fields(Finding)])
    return frame.set_index("id")[["claim", "paper", "ours", "verdict"]]


def format_findings(findings: Sequence[Finding | dict]) -> str:
    """Plain-text report, one block per claim: verdict, ours beside the paper's, criterion and where it holds."""
    blocks = []
    for f in findings:
        d = f.to_dict() if isinstance(f, Finding) else dict(f)
        paper = f" | paper: {d['paper']}" if d["paper"] else ""
        blocks.append(f"[{d['verdict'].upper()}] {d['id']}: {d['claim']}\n  ours: {d['ours']}{paper}\n"
                      f"  criterion: {d['criterion']}" + (f"\n  where: {d['detail']}" if d["detail"] else ""))
    return "\n\n".join(blocks)


def _require(frame: pd.DataFrame, columns: set[str], what: str) -> None:
    """Raise a clear error when a table lacks columns."""
    missing = set(columns) - set(frame.columns)
    if missing:
        raise ValueError(f"{what} needs columns {sorted(missing)}; the table has {list(frame.columns)}")
