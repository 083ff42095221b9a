"""The comparison study (notebook 06) as data: search space, declared selection rule, resumable store, seed statistics.

Every method gets the same search budget (9 configurations: 3 learning rates x 3 values of one method knob; FARE,
which has no method weight here, gets a 9-point learning-rate grid instead). Configurations are compared on the
validation tasks only (:data:`nbhelpers.world.VALIDATION_TASKS`), the selected one of each method is trained with
several training seeds shared across methods, and the test tasks are reported as a mean with a 95% Student-t
interval over seeds and as paired per-seed differences between methods.

Training and evaluation stay outside this module: the study loop takes a callable
``run_config(config, train_seed) -> {metric: value}`` (``config`` is ``{"method": ..., **overrides}``), so it is
tested without training. Scores are accuracies as fractions in [0, 1]: ``"clean"`` and ``"robust@<eps>"`` (eps in
1/255 units, see :func:`robust_metric`), each the mean over the evaluated tasks.

Every run is one JSON line of a :class:`StudyStore`, keyed by :func:`row_key`, so an interrupted study resumes
where it stopped and the notebook renders from the committed file alone.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd


from nbhelpers import methods
from nbhelpers.config import STUDY_STAGES, FinetuneKnobs, IATKnobs, TAIKnobs
from nbhelpers.findings import (FAMILY_ALPHA, MIXED, NOT_REPRODUCED, REPRODUCED, SESOI, Effect, Finding, Interval,
                                effect_interval, holm, judge_ahead, judge_effect, judge_noninferior,
                                measured_image_variance, paired_bootstrap_diff_ci, paired_image_variance,
                                t_interval)
from nbhelpers.store import JsonlStore
from nbhelpers.utils import content_key, progress_bar, unpack_mask

STAGES: tuple[str, ...] = STUDY_STAGES  # validation (selection), test (seeds), strong (AutoAttack), ablation
LR_GRID: dict[str, tuple[float, ...]] = {"mini": (1e-4, 3e-4, 1e-3), "paper": (3e-6, 1e-5, 3e-5)}  # peak SGD lr
BUDGET = 9  # configurations per method


def study_methods() -> tuple[str, ...]:
    """The methods the study searches, selects and compares (their records have a search grid: nbhelpers.methods)."""
    return tuple(methods.study_names())


def baselines() -> tuple[str, ...]:
    """What TIMA is compared with (TAI is part of it): the records marked baseline."""
    return tuple(methods.baseline_names())


@dataclass(frozen=True)
class Ablation:
    """One ablation variant: method `method` (a record of nbhelpers.methods) trained at the selected configuration
    of `parent` with `overrides` on top (IAT variants also take TIMA's selected sc_weight where they keep the
    consistency term)."""

    parent: str
    method: str
    overrides: tuple[tuple[str, object], ...]
    keeps_sc: bool
    description: str


def _ab(parent: str, method: str, description: str, *, keeps_sc: bool = False, **overrides: object) -> Ablation:
    return Ablation(parent, method, tuple(sorted(overrides.items())), keeps_sc, description)


# TIMA's ablations (issue 10): not searched; each at the selected configuration of its parent, same train seeds
ABLATIONS: dict[str, Ablation] = {
    "margin_uniform": _ab("tai", "tai", "TeCoA + uniform margin only (ASAM's offset term, gain 0)",
                          takd_weight=0.0, asam_gain=0.0),
    "margin_semantic": _ab("tai", "tai", "TeCoA + semantic margin only (offset_weight 0)",
                           takd_weight=0.0, offset_weight=0.0),
    "margin_asam": _ab("tai", "tai", "TeCoA + ASAM (offset measured once, on the pre-trained model)",
                       takd_weight=0.0),
    "margin_asam_adaptive": _ab("tai", "tai", "TeCoA + ASAM, offset re-measured every 50 steps",
                                takd_weight=0.0, offset_every=50),
    "margin_tam_text": _ab("tai", "tai", "TeCoA + TAM, text-text gate", takd_weight=0.0,
                           margin_kind="tam"),
    "margin_tam_sample": _ab("tai", "tai", "TeCoA + TAM, per-sample image-text gate", takd_weight=0.0,
                             margin_kind="tam_sample"),
    "takd_adv_teacher": _ab("tai", "tai", "TAI with TAKD to the pre-trained model on the adversarial image",
                            takd_target="adv"),
    "takd_feature": _ab("tai", "tai", "TAI with TAKD as feature cosine to the pre-trained embedding",
                        takd_target="feature"),
    "iat_mhe": _ab("tecoa", "iat_tecoa", "TeCoA against MHE-only text", sc_weight=0.0, iakd_weight=0.0),
    "iat_sc_mhe": _ab("tecoa", "iat_tecoa", "TeCoA against SC-MHE text", keeps_sc=True, iakd_weight=0.0),
    "iat_mhe_iakd": _ab("tecoa", "iat_tecoa", "TeCoA against MHE + IAKD text", sc_weight=0.0),
    "iat_full": _ab("tecoa", "iat_tecoa", "TeCoA against IAT text (SC-MHE + IAKD)", keeps_sc=True),
    "iat_row_softmax": _ab("tecoa", "iat_tecoa", "TeCoA against IAT text with row-softmax consistency",
                           sc_kind="row_softmax"),
}
ABLATION_REFERENCES: tuple[str, ...] = ("tecoa", "tai", "tima")  # re-evaluated beside the ablations (same images)


def ablation_configs(selected: Mapping[str, Mapping[str, object]],
                     names: Sequence[str] | None = None) -> dict[str, list[dict[str, object]]]:
    """{variant: [overrides]}: each variant's parent's selected overrides plus its own (TIMA's selected sc_weight
    where the variant keeps the consistency term); then the references at their selected configurations."""
    out: dict[str, list[dict[str, object]]] = {}
    for name in names if names is not None else ABLATIONS:
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; choose from {sorted(ABLATIONS)}")
        ab = ABLATIONS[name]
        over = {**selected[ab.parent], **dict(ab.overrides)}
        if ab.keeps_sc and "sc_weight" in selected.get("tima", {}):
            over["sc_weight"] = selected["tima"]["sc_weight"]
        out[name] = [over]
    for ref in ABLATION_REFERENCES:
        out[ref] = [dict(selected[ref])]
    return out


def trained_as(name: str) -> str:
    """The method record (nbhelpers.methods) a study method or ablation variant is trained and evaluated as."""
    if name in ABLATIONS:
        return ABLATIONS[name].method
    if name in study_methods():
        return name
    raise ValueError(f"unknown study method {name!r}; choose from {list(study_methods())} or {sorted(ABLATIONS)}")


def knob_defaults() -> dict[str, object]:
    """Default of every knob a study configuration may override (TAI, IAT and fine-tuning knobs)."""
    return {**TAIKnobs.defaults(), **IATKnobs.defaults(), **FinetuneKnobs.defaults()}


def search_space(*, profile: str = "mini", finetune_steps: int = 200) -> dict[str, list[dict[str, float | int]]]:
    """{study method: BUDGET override dicts}: 3 lrs x the record's 3 knob values; lr-only records (FARE) get BUDGET
    log-spaced lrs over the span x sqrt(10)."""
    lrs = LR_GRID[profile]
    defaults = knob_defaults()
    space: dict[str, list[dict[str, float | int]]] = {}
    for name in study_methods():
        method = methods.get(name)
        if method.lr_only:
            space[name] = methods.lr_only_grid(lrs, BUDGET)
        else:
            space[name] = [{"finetune_lr": lr, **k} for lr in lrs for k in method.search(defaults, finetune_steps)]
        if len(space[name]) != BUDGET:
            raise ValueError(f"method {name!r} has {len(space[name])} configurations, not the study's budget {BUDGET}")
    return space


def config_id(overrides: Mapping[str, object]) -> str:
    """Canonical JSON of an override dict: identity of a configuration and the final tie-breaker of selection."""
    return json.dumps(dict(overrides), sort_keys=True)


# ---------------------------------------------------------------------------------------------- metrics
def robust_metric(eps: float) -> str:
    """Score name of robust accuracy at eps (1/255 units), e.g. 4.0 -> 'robust@4'."""
    return f"robust@{eps:g}"


def metric_eps(metric: str) -> float:
    """eps (1/255 units) of a score name: 0 for 'clean', eps for '<attack>@<eps>' (a '/task' or 'text:' part is
    ignored), NaN for anything else."""
    name = metric.split(":")[-1].split("/")[0]
    if name == "clean":
        return 0.0
    if "@" in name:
        return float(name.split("@", 1)[1])
    return math.nan


# ---------------------------------------------------------------------------------------------- selection
@dataclass(frozen=True)
class SelectionRule:
    """Declared before any result: among each method's configurations whose validation clean accuracy is at least
    the best `reference` configuration's minus `clean_tolerance` (fraction; 0.01 = 1 point), take the highest
    `metric`; ties by higher clean accuracy, then by config_id; if none qualifies, the highest clean accuracy."""

    metric: str = "robust@4"
    clean_metric: str = "clean"
    reference: str = "tecoa"
    clean_tolerance: float = 0.01

    def describe(self) -> str:
        """The rule in one sentence (for the notebook and the store's header)."""
        return (f"per method, highest validation {self.metric} among configurations whose validation "
                f"{self.clean_metric} is within {100 * self.clean_tolerance:g} point(s) of the best {self.reference} "
                f"configuration's (ties: higher {self.clean_metric}, then config_id; none within: highest "
                f"{self.clean_metric})")

    def to_dict(self) -> dict[str, object]:
        """Plain dict (for result metadata)."""
        return asdict(self)


DEFAULT_RULE = SelectionRule()


def _scores(row: Mapping, names: Iterable[str]) -> dict[str, float]:
    """The named scores of a row, as floats; a clear error if one is missing."""
    missing = [n for n in names if n not in row["scores"]]
    if missing:
        raise KeyError(f"row {row.get('key', '?')} ({row['method']}) has no score(s) {missing}")
    return {n: float(row["scores"][n]) for n in names}


def rank_configs(rows: Sequence[Mapping], *, rule: SelectionRule = DEFAULT_RULE) -> pd.DataFrame:
    """Every configuration of the validation rows, scores averaged over its train seeds, with eligibility and rank.

    Columns: method, config_id, overrides, n_seeds, clean, score, eligible, rank (1 = selected), in method order
    of appearance then rank.
    """
    names = [rule.clean_metric, rule.metric]
    groups: dict[tuple[str, str], list[Mapping]] = {}
    for row in rows:
        groups.setdefault((row["method"], config_id(row["overrides"])), []).append(row)
    table = []
    for (method, cid), members in groups.items():
        s = [_scores(r, names) for r in members]
        table.append({"method": method, "config_id": cid, "overrides": dict(members[0]["overrides"]),
                      "n_seeds": len({r["train_seed"] for r in members}),
                      "clean": sum(x[rule.clean_metric] for x in s) / len(s),
                      "score": sum(x[rule.metric] for x in s) / len(s)})
    ref = [t["clean"] for t in table if t["method"] == rule.reference]
    if not ref:
        raise ValueError(f"no validation rows of the reference method {rule.reference!r}: the rule needs them")
    floor = max(ref) - rule.clean_tolerance - 1e-12
    for t in table:
        t["eligible"] = t["clean"] >= floor
    methods = list(dict.fromkeys(t["method"] for t in table))
    out = []
    for method in methods:
        mine = [t for t in table if t["method"] == method]
        mine.sort(key=lambda t: (not t["eligible"], -t["score"] if t["eligible"] else -t["clean"],
                                 -t["clean"] if t["eligible"] else -t["score"], t["config_id"]))
        out += [{**t, "rank": i + 1} for i, t in enumerate(mine)]
    return pd.DataFrame(out, columns=["method", "config_id", "overrides", "n_seeds", "clean", "score", "eligible",
                                      "rank"])


def select(rows: Sequence[Mapping], *, rule: SelectionRule = DEFAULT_RULE) -> dict[str, dict[str, object]]:
    """{method: overrides of its selected configuration} under the declared rule (see :class:`SelectionRule`)."""
    ranked = rank_configs(rows, rule=rule)
    return {r.method: dict(r.overrides) for r in ranked.itertuples() if r.rank == 1}


# ---------------------------------------------------------------------------------------------- store
def row_key(*, stage: str, method: str, overrides: Mapping[str, object], train_seed: int,
            evaluation: Mapping[str, object]) -> str:
    """Key of one trained-and-evaluated configuration (content_key of stage, method, overrides, seed, evaluation)."""
    return content_key({"stage": stage, "method": method, "overrides": dict(overrides), "train_seed": train_seed,
                        "evaluation": dict(evaluation)})


class StudyStore(JsonlStore):
    """06's store: the shared resumable JSON-lines store (nbhelpers.store), one row per trained configuration and
    evaluated cell, keyed by its 'key' (:func:`row_key`), without a meta file."""

    def __init__(self, path: str | Path, *, lock: bool = True) -> None:
        super().__init__(path, key_fields=("key",), lock=lock)

    def rows(self, *, stage: str | None = None) -> list[dict]:
        """All rows in file order (only `stage`'s if given); a last line cut short is ignored with a warning."""
        return [r for r in super().rows() if stage is None or r.get("stage") == stage]

    def append(self, row: Mapping[str, object], *, replace: bool = False) -> None:
        """Add one row holding a new non-empty string 'key' (see JsonlStore.append: one line, fsynced)."""
        key = row.get("key")
        if not isinstance(key, str) or not key:
            raise ValueError("a study row needs a non-empty string 'key' (see row_key)")
        super().append(row, replace=replace)


# (config, train_seed) -> scores, or (scores, per_sample): per_sample maps "<metric>/<task>" to the packed
# per-image correctness (nbhelpers.utils.pack_mask) of the evaluation's n images, kept for paired checks
RunConfig = Callable[[dict[str, object], int],
                     Mapping[str, float] | tuple[Mapping[str, float], Mapping[str, str]]]


def run_missing(store: StudyStore, run_config: RunConfig, *, stage: str,
                configs: Mapping[str, Sequence[Mapping[str, object]]], train_seeds: Sequence[int],
                evaluation: Mapping[str, object], progress: bool = False) -> int:
    """Run every (train seed, method, configuration) not yet in the store, seeds outermost (an interrupted study has
    whole seeds across methods); returns how many were run. run_config gets {"method": m, **overrides} and the seed.
    Each row also records how long it took (seconds, training included)."""
    todo = plan_missing(store, stage=stage, configs=configs, train_seeds=train_seeds, evaluation=evaluation)
    return run_planned(store, run_config, todo, stage=stage, evaluation=evaluation, progress=progress)


# one planned run of a stage: (row key, train seed, method, overrides)
PlannedRun = tuple[str, int, str, dict[str, object]]


def plan_missing(store: StudyStore, *, stage: str, configs: Mapping[str, Sequence[Mapping[str, object]]],
                 train_seeds: Sequence[int], evaluation: Mapping[str, object]) -> list[PlannedRun]:
    """The runs of a stage that the store lacks, in run order (seeds outermost, then methods, then configurations)."""
    stored = {row["key"] for row in store.rows()}
    todo = []
    for seed in train_seeds:
        for method, overrides_list in configs.items():
            for overrides in overrides_list:
                key = row_key(stage=stage, method=method, overrides=overrides, train_seed=seed, evaluation=evaluation)
                if key not in stored:
                    todo.append((key, seed, method, dict(overrides)))
    return todo


def run_planned(store: StudyStore, run_config: RunConfig, todo: Sequence[PlannedRun], *, stage: str,
                evaluation: Mapping[str, object], progress: bool = False) -> int:
    """Run the planned runs in order, appending one row each to the store (a dispatched job's: its shard);
    returns how many were run."""
    bar = progress_bar(todo, desc=f"study {stage}", disable=not progress)
    for key, seed, method, overrides in bar:
        bar.set_postfix_str(f"seed {seed} {method}", refresh=False)
        t0 = time.time()
        result = run_config({"method": method, **overrides}, seed)
        scores, per_sample = result if isinstance(result, tuple) else (result, {})
        row = {"key": key, "stage": stage, "method": method, "overrides": dict(overrides), "train_seed": seed,
               "evaluation": dict(evaluation), "scores": {str(k): float(v) for k, v in scores.items()},
               "seconds": round(time.time() - t0, 1)}
        if per_sample:
            row["per_sample"] = {str(k): str(v) for k, v in per_sample.items()}
        store.append(row)
    return len(todo)


# ---------------------------------------------------------------------------------------------- seeds
def _by_method_seed(rows: Sequence[Mapping]) -> dict[str, dict[int, dict[str, float]]]:
    """{method: {train_seed: scores}}; one configuration per method and one row per seed, else an error."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    configs: dict[str, set[str]] = {}
    for row in rows:
        method, seed = row["method"], int(row["train_seed"])
        configs.setdefault(method, set()).add(config_id(row["overrides"]))
        if seed in out.setdefault(method, {}):
            raise ValueError(f"{method}: train seed {seed} appears twice")
        out[method][seed] = {k: float(v) for k, v in row["scores"].items()}
    mixed = sorted(m for m, c in configs.items() if len(c) > 1)
    if mixed:
        raise ValueError(f"rows mix several configurations of {mixed}: pass one configuration per method")
    return out


def seed_summary(rows: Sequence[Mapping], *, level: float = 0.95) -> pd.DataFrame:
    """Mean over train seeds with its Student-t interval, per method and score (fractions; NaN ends below 2 seeds).

    Columns: method, metric, eps (1/255; 0 clean), n_seeds, mean, ci_low, ci_high.
    """
    table = []
    for method, seeds in _by_method_seed(rows).items():
        metrics = list(dict.fromkeys(k for s in seeds.values() for k in s))
        for metric in metrics:
            values = [s[metric] for s in seeds.values() if metric in s]
            iv = t_interval(values, level=level)
            table.append({"method": method, "metric": metric, "eps": metric_eps(metric), "n_seeds": len(values),
                          "mean": iv.estimate, "ci_low": iv.low, "ci_high": iv.high})
    return pd.DataFrame(table, columns=["method", "metric", "eps", "n_seeds", "mean", "ci_low", "ci_high"])


def _shared_seeds(by: Mapping[str, Mapping[int, object]], a: str, b: str) -> list[int]:
    """The train seeds both methods have ({method: {seed: ...}}), sorted; an error if either has none."""
    for m in (a, b):
        if m not in by:
            raise ValueError(f"no rows of method {m!r}")
    seeds = sorted(set(by[a]) & set(by[b]))
    if not seeds:
        raise ValueError(f"methods {a!r} and {b!r} share no train seed")
    return seeds


def paired_seed_differences(rows: Sequence[Mapping], a: str, b: str, *, level: float = 0.95) -> pd.DataFrame:
    """Per-seed paired differences a - b (fractions) over the train seeds both have, per score, with a t-interval.

    Columns: a, b, metric, eps, n_pairs, mean_diff, ci_low, ci_high, seeds (list), diffs (list, in seed order).
    """
    by = _by_method_seed(rows)
    seeds = _shared_seeds(by, a, b)
    metrics = [k for k in by[a][seeds[0]] if all(k in by[m][s] for m in (a, b) for s in seeds)]
    table = []
    for metric in metrics:
        diffs = [by[a][s][metric] - by[b][s][metric] for s in seeds]
        iv = t_interval(diffs, level=level)
        table.append({"a": a, "b": b, "metric": metric, "eps": metric_eps(metric), "n_pairs": len(seeds),
                      "mean_diff": iv.estimate, "ci_low": iv.low, "ci_high": iv.high, "seeds": seeds,
                      "diffs": diffs})
    return pd.DataFrame(table, columns=["a", "b", "metric", "eps", "n_pairs", "mean_diff", "ci_low", "ci_high",
                                        "seeds", "diffs"])


# ---------------------------------------------------------------------------------------------- findings
SCOPES: tuple[str, ...] = ("pooled", "study", "replica")  # both stores together, the CPU store, the H100 replica
_KAPPA_DEFAULT = ("*", "*")


def _rows_by_seed(rows: Sequence[Mapping]) -> dict[str, dict[int, Mapping]]:
    """{method: {train_seed: row}} (one configuration per method and one row per seed, else an error)."""
    _by_method_seed(rows)  # the checks
    out: dict[str, dict[int, Mapping]] = {}
    for r in rows:
        out.setdefault(str(r["method"]), {})[int(r["train_seed"])] = r
    return out


def _tasks_and_n(row: Mapping) -> tuple[list[str], int]:
    """The tasks and images per task a row was evaluated on (its evaluation spec); a clear error if absent."""
    spec = row.get("evaluation") or {}
    if "tasks" not in spec or "n" not in spec:
        raise ValueError(f"row of {row.get('method')} (seed {row.get('train_seed')}) has no evaluation tasks and n: "
                         "the image-sampling term of the interval needs them")
    return list(spec["tasks"]), int(spec["n"])


def discordance_factors(strong_rows: Sequence[Mapping]) -> dict[tuple[str, str], float]:
    """kappa per pair of methods (sorted names) from the strong stage's per-image results: per stored metric, the
    measured per-image variance of the seed-averaged paired difference (same seeds, same images) summed over the
    tasks, over the sum of its independent-binomial bounds p_a(1 - p_a) + p_b(1 - p_b); the largest over the
    metrics, capped at 1. Key ("*", "*"): the largest over all pairs (used for pairs the strong stage does not
    hold, e.g. the ablation variants); {("*", "*"): 1.0} without per-image data."""
    bits: dict[str, dict[int, Mapping]] = {}
    for r in strong_rows:
        if r.get("per_sample"):
            bits.setdefault(str(r["method"]), {})[int(r["train_seed"])] = r
    out: dict[tuple[str, str], float] = {}
    methods = sorted(bits)
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            seeds = sorted(set(bits[a]) & set(bits[b]))
            if not seeds:
                continue
            tasks, n = _tasks_and_n(bits[a][seeds[0]])
            names = sorted({k.split("/")[0] for k in bits[a][seeds[0]]["per_sample"]})
            ratios = []
            for metric in names:
                var, bound = 0.0, 0.0
                for t in tasks:
                    key = f"{metric}/{t}"
                    if not all(key in bits[m][s]["per_sample"] for m in (a, b) for s in seeds):
                        continue
                    xa = np.mean([unpack_mask(bits[a][s]["per_sample"][key], n) for s in seeds], axis=0)
                    xb = np.mean([unpack_mask(bits[b][s]["per_sample"][key], n) for s in seeds], axis=0)
                    var += float(np.var(xa - xb, ddof=1))
                    bound += xa.mean() * (1 - xa.mean()) + xb.mean() * (1 - xb.mean())
                if bound > 0:  # ratio of sums over tasks: the estimate of one kappa for the mean over tasks
                    ratios.append(var / bound)
            if ratios:
                out[(a, b)] = min(1.0, max(ratios))
    out[_KAPPA_DEFAULT] = max(out.values()) if out else 1.0
    return out


def _kappa(factors: Mapping[tuple[str, str], float], a: str, b: str) -> float:
    """The pair's kappa, else the largest measured one, else 1 (independence)."""
    return float(factors.get(tuple(sorted((a, b))), factors.get(_KAPPA_DEFAULT, 1.0)))


def paired_effect(stores: Sequence[Sequence[Mapping]], a: str, b: str, metric: str, *, kappa: float = 1.0,
                  level: float = 0.95) -> tuple[Effect, list[list[float]]]:
    """a minus b at `metric` (fractions, mean over the evaluated tasks), paired by train seed within each store, with
    the interval of :func:`findings.effect_interval` over all runs of all given stores: between-run variance plus
    the image-sampling term :func:`findings.paired_image_variance` from the per-task accuracies averaged over every
    run (the stores evaluate the same images). Returns (effect, per-store lists of per-seed differences)."""
    diffs: list[list[float]] = []
    acc: dict[str, list[list[float]]] = {a: [], b: []}
    tasks_n = None
    for rows in stores:
        by = _rows_by_seed(rows)
        seeds = _shared_seeds(by, a, b)
        mine = []
        for s in seeds:
            for m in (a, b):
                tn = _tasks_and_n(by[m][s])
                if tasks_n is None:
                    tasks_n = tn
                elif tn != tasks_n:
                    raise ValueError(f"{m} seed {s} was evaluated on {tn}, other rows on {tasks_n}: not the same images")
                scores = by[m][s]["scores"]
                missing = [k for k in [metric] + [f"{metric}/{t}" for t in tn[0]] if k not in scores]
                if missing:
                    raise ValueError(f"{m} seed {s} lacks the score(s) {missing}")
                acc[m].append([float(scores[f"{metric}/{t}"]) for t in tn[0]])
            mine.append(float(by[a][s]["scores"][metric]) - float(by[b][s]["scores"][metric]))
        diffs.append(mine)
    tasks, n = tasks_n
    p_a, p_b = np.mean(acc[a], axis=0), np.mean(acc[b], axis=0)
    image_var = paired_image_variance(p_a, p_b, np.full(len(tasks), n), kappa=kappa)
    return effect_interval([d for part in diffs for d in part], image_var, level=level), diffs


def _pooled_mean(stores: Sequence[Sequence[Mapping]], method: str, metric: str) -> float:
    values = [float(r["scores"][metric]) for rows in stores for r in rows
              if r["method"] == method and metric in r["scores"]]
    return float(np.mean(values)) if values else -math.inf


def best_baseline(rows: Sequence[Mapping], metric: str, *, among: Sequence[str] | None = None,
                  extra_stores: Sequence[Sequence[Mapping]] = ()) -> str:
    """The baseline (among: default baselines()) with the highest mean `metric` over all runs (train seeds; of every
    store given) in rows."""
    means = {b: _pooled_mean([rows, *extra_stores], b, metric) for b in (among if among is not None else baselines())}
    means = {b: v for b, v in means.items() if math.isfinite(v)}
    if not means:
        raise ValueError(f"no baseline rows with score {metric!r}")
    return max(means, key=lambda b: (means[b], b))


MASKING_TOLERANCE = 0.02  # ours: how much a model's PGD-minus-AA gap may exceed TeCoA's (fraction)
STRONG_ATTACK_NAME = "APGD-CE + APGD-T (AutoAttack's gradient attacks)"


def _bits(row: Mapping, metric: str) -> list[np.ndarray] | None:
    """Per task, the row's per-image correctness under metric as 0/1 floats; None if the row lacks any of them."""
    per_sample = row.get("per_sample")
    if not per_sample:
        return None
    tasks, n = _tasks_and_n(row)
    out = []
    for t in tasks:
        if f"{metric}/{t}" not in per_sample:
            return None
        out.append(unpack_mask(per_sample[f"{metric}/{t}"], n).astype(float))
    return out


def _seed_level(runs: Sequence[list[np.ndarray]], level: float, null: float = 0.0) -> Effect:
    """Per-image values per run (a list per task), the same images in every run: the mean over tasks and runs with
    the seed-level interval (between-run variance of the run means + the image term of the run-averaged per-image
    values; not a bootstrap that treats the runs' re-evaluations of the same images as independent)."""
    run_means = [float(np.mean([x.mean() for x in run])) for run in runs]
    per_task = [np.mean([run[t] for run in runs], axis=0) for t in range(len(runs[0]))]
    return effect_interval(run_means, measured_image_variance(per_task), level=level, null=null)


def _strong_runs(stores: Sequence[Sequence[Mapping]], method: str, pgd: str, aa: str,
                 reference: str | None = None) -> list[list[np.ndarray]] | None:
    """Per run (store, seed) of `method`: per task, each image's PGD-minus-AA gap (minus the reference's on the same
    run and images, if given); None if any run lacks per-image data or the reference's run."""
    runs = []
    for rows in stores:
        mine = {int(r["train_seed"]): r for r in rows if r["method"] == method}
        refs = {int(r["train_seed"]): r for r in rows if r["method"] == reference} if reference else {}
        for s in sorted(mine):
            p, a = _bits(mine[s], pgd), _bits(mine[s], aa)
            if p is None or a is None:
                return None
            gap = [x - y for x, y in zip(p, a)]
            if reference:
                if s not in refs:
                    continue
                rp, ra = _bits(refs[s], pgd), _bits(refs[s], aa)
                if rp is None or ra is None or [len(x) for x in rp] != [len(x) for x in p]:
                    return None
                gap = [g - (x - y) for g, x, y in zip(gap, rp, ra)]
            runs.append(gap)
    return runs or None


def strong_gaps(strong_rows: Sequence[Mapping], *, eps: float, reference: str = "tecoa",
                extra_stores: Sequence[Sequence[Mapping]] = (), level: float = 0.95) -> pd.DataFrame:
    """Per checked method: PGD-10 and APGD-CE + APGD-T accuracy at eps on the same images (mean over runs and tasks),
    the gap PGD - AA and its excess over the reference's gap on the same runs and images, in points, each with a
    seed-level interval (:func:`findings.effect_interval`: between-run variance + the measured image term) where
    per-image data is stored (NaN ends otherwise, and with a single run). extra_stores: more stores' strong rows,
    pooled as further runs."""
    aa, pgd = f"aa@{eps:g}", robust_metric(eps)
    stores = [strong_rows, *extra_stores]
    methods = list(dict.fromkeys(str(r["method"]) for rows in stores for r in rows
                                 if aa in r["scores"] and pgd in r["scores"]))
    out = []
    for method in methods:
        rows = [r for st in stores for r in st if r["method"] == method and aa in r["scores"] and pgd in r["scores"]]
        line = {"method": method, "seeds": sorted(int(r["train_seed"]) for r in rows), "runs": len(rows),
                "pgd": 100 * float(np.mean([r["scores"][pgd] for r in rows])),
                "aa": 100 * float(np.mean([r["scores"][aa] for r in rows])),
                "gap_low": math.nan, "gap_high": math.nan,
                "excess": math.nan, "excess_low": math.nan, "excess_high": math.nan}
        line["gap"] = line["pgd"] - line["aa"]
        runs = _strong_runs([[r for r in st if r["method"] == method] for st in stores], method, pgd, aa)
        if runs is not None:
            g = _seed_level(runs, level)
            line["gap"], line["gap_low"], line["gap_high"] = 100 * g.estimate, 100 * g.low, 100 * g.high
        if method != reference:
            ex = _strong_runs(stores, method, pgd, aa, reference=reference)
            if ex is not None:
                e = _seed_level(ex, level)
                line["excess"], line["excess_low"], line["excess_high"] = 100 * e.estimate, 100 * e.low, 100 * e.high
            else:  # no per-image data: the point difference alone (same seeds)
                ref = {(id(st), int(r["train_seed"])): r for st in stores for r in st if r["method"] == reference}
                pairs = [(r, ref.get((id(st), int(r["train_seed"])))) for st in stores for r in st
                         if r["method"] == method]
                pairs = [(r, q) for r, q in pairs if q is not None and aa in q["scores"]]
                if pairs:
                    line["excess"] = 100 * float(np.mean([(r["scores"][pgd] - r["scores"][aa])
                                                          - (q["scores"][pgd] - q["scores"][aa]) for r, q in pairs]))
        out.append(line)
    return pd.DataFrame(out, columns=["method", "seeds", "runs", "pgd", "aa", "gap", "gap_low", "gap_high", "excess",
                                      "excess_low", "excess_high"])


ABLATION_CLAIMS: tuple[tuple[str, str, str, str], ...] = (
    ("06_ablation_tai", "tai", "tecoa", "TAI (adaptive margins + text-aware distillation) adds robustness to TeCoA"),
    ("06_ablation_iat", "tima", "tai", "IAT (tuned text) adds robustness on top of TAI"),
    ("06_ablation_asam_vs_tam", "margin_asam", "margin_tam_text", "ASAM (AAAI) is better than TAM (v1) as a margin"),
    ("06_ablation_takd", "tai", "margin_asam", "text-aware distillation adds robustness to the margins"),
)


def study_verdicts(test_rows: Sequence[Mapping], *, ablation_rows: Sequence[Mapping] = (),
                   strong_rows: Sequence[Mapping] = (), replica: Mapping[str, Sequence[Mapping]] | None = None,
                   eps_small: float = 1.0, eps_large: float = 4.0, clean_tolerance: float = 0.01,
                   sesoi: float = SESOI, alpha: float = FAMILY_ALPHA) -> pd.DataFrame:
    """Every claim of 06 in every scope, under docs/VERDICT_RULES.md: one row per (finding, scope).

    Scopes: 'study' (this store), 'replica' (replica's rows by stage, if given) and 'pooled' (both stores' runs
    together: two selections of the same study). Per scope, Holm (:func:`findings.holm`, family level alpha) over the
    claims that scope has sets each claim's interval level; the verdict is read from that interval
    (:func:`findings.judge_effect` with sesoi; the masking check :func:`findings.judge_noninferior`). The decisive
    scope of a claim is 'pooled' where the replica has its stage, else 'study'. Fractions throughout.

    Columns: finding, scope, a, b, metric, runs, estimate, low95, high95, level, low, high, p, p_holm, se, seed_se,
    image_se, df, clean_estimate, clean_low, clean_high, per_run (list per store), verdict, decisive.
    """
    replica = dict(replica or {})
    kappas = discordance_factors(strong_rows)
    stage_rows = {"study": {"test": test_rows, "ablation": ablation_rows, "strong": strong_rows}, "replica": replica}
    scopes = {"study": ["study"], "replica": ["replica"], "pooled": ["study", "replica"]}
    claims: list[tuple[str, str, str, str, str]] = []  # (id, stage, a, b, metric)
    for tag, eps in (("small", eps_small), ("large", eps_large)):
        metric = robust_metric(eps)
        extra = [replica["test"]] if replica.get("test") else []
        claims.append((f"06_tima_vs_best_{tag}_eps", "test", "tima",
                       best_baseline(test_rows, metric, extra_stores=extra), metric))
    methods = {r["method"] for r in ablation_rows}
    for fid, a, b, _ in ABLATION_CLAIMS:
        if a in methods and b in methods:
            claims.append((fid, "ablation", a, b, robust_metric(eps_large)))
    if strong_rows:
        claims.append(("06_no_gradient_masking", "strong", "tima", "tecoa", f"aa@{eps_large:g}"))
    lines = []
    for scope, names in scopes.items():
        family = []
        for fid, stage, a, b, metric in claims:
            stores = [stage_rows[n].get(stage) or [] for n in names]
            if not all(stores) or (scope == "pooled" and len(stores) < 2):
                continue
            try:
                if stage == "strong":
                    runs = _strong_runs(stores, a, robust_metric(eps_large), metric, reference=b)
                    if runs is None and scope == "pooled":
                        continue
                    if runs is None:  # the store checked other models (or kept no per-image data): no interval
                        eff = Effect(math.nan, math.nan, math.nan, 0.95, math.nan, math.nan, math.nan, math.nan, 0.0,
                                     0, MASKING_TOLERANCE)
                        per_run = [[]]
                    else:
                        eff = _seed_level(runs, 0.95, null=MASKING_TOLERANCE)
                        per_run = [[float(np.mean([x.mean() for x in run])) for run in runs]]
                    clean = None
                else:
                    k = _kappa(kappas, a, b)
                    eff, per_run = paired_effect(stores, a, b, metric, kappa=k)
                    clean = paired_effect(stores, a, b, "clean", kappa=k)[0] if stage == "test" else None
            except ValueError:
                if scope == "study":
                    raise
                continue  # the replica lacks this claim's methods
            family.append({"finding": fid, "scope": scope, "stage": stage, "a": a, "b": b, "metric": metric,
                           "eff": eff, "clean": clean, "per_run": per_run})
        levels, adjusted = holm([f["eff"].p for f in family], alpha=alpha)
        for f, lvl, padj in zip(family, levels, adjusted):
            eff, clean = f["eff"], f["clean"]
            adj = eff.at_level(lvl)
            if f["stage"] == "strong":
                verdict = judge_noninferior(adj, margin=MASKING_TOLERANCE)
            else:
                verdict = judge_effect(adj, sesoi=sesoi)
            cl = clean.at_level(lvl) if clean is not None else None
            if verdict == REPRODUCED and cl is not None and not (math.isfinite(cl.high)
                                                                 and cl.high >= -clean_tolerance):
                verdict = MIXED  # more robust, but at a clean cost beyond the tolerance: holds in part
            lines.append({"finding": f["finding"], "scope": scope, "a": f["a"], "b": f["b"], "metric": f["metric"],
                          "runs": eff.n_runs, "estimate": eff.estimate, "low95": eff.low, "high95": eff.high,
                          "level": lvl, "low": adj.low, "high": adj.high, "p": eff.p, "p_holm": padj,
                          "se": eff.se, "seed_se": math.sqrt(eff.seed_var) if math.isfinite(eff.seed_var) else math.nan,
                          "image_se": math.sqrt(eff.image_var), "df": eff.df,
                          "clean_estimate": cl.estimate if cl else math.nan, "clean_low": cl.low if cl else math.nan,
                          "clean_high": cl.high if cl else math.nan, "per_run": f["per_run"], "verdict": verdict})
    table = pd.DataFrame(lines, columns=["finding", "scope", "a", "b", "metric", "runs", "estimate", "low95", "high95",
                                         "level", "low", "high", "p", "p_holm", "se", "seed_se", "image_se", "df",
                                         "clean_estimate", "clean_low", "clean_high", "per_run", "verdict"])
    pooled = set(table.loc[table.scope == "pooled", "finding"])
    table["decisive"] = [(s == "pooled") if f in pooled else (s == "study") for f, s in zip(table.finding, table.scope)]
    return table


_SCOPE_NAME = {"pooled": "pooled", "study": "CPU store", "replica": "H100 replica"}


def _scope_text(line: Mapping, *, clean: bool = False) -> str:
    """'+0.4 [-1.2, +2.0] (98.8%)' in points, the adjusted interval at its Holm level."""
    if clean:
        iv = Interval(line["clean_estimate"], line["clean_low"], line["clean_high"])
    else:
        iv = Interval(line["estimate"], line["low"], line["high"])
    e, lo, hi = (f"{100 * v:+.1f}" if math.isfinite(v) else "n/a" for v in iv)
    return f"{e} [{lo}, {hi}]"


def _level_text(level: float) -> str:
    return f"{100 * level:.1f}%"


def findings_study(test_rows: Sequence[Mapping], *, ablation_rows: Sequence[Mapping] = (),
                   strong_rows: Sequence[Mapping] = (), replica: Mapping[str, Sequence[Mapping]] | None = None,
                   eps_small: float = 1.0, eps_large: float = 4.0, clean_tolerance: float = 0.01,
                   sesoi: float = SESOI, alpha: float = FAMILY_ALPHA,
                   figure: str = "figures/06_seeds.png") -> list[Finding]:
    """Verdicts of notebook 06 (docs/VERDICT_RULES.md): TIMA vs the best baseline at small and large eps, each TIMA
    module's contribution (ablations), and the gradient-masking check, from :func:`study_verdicts`: pooled over
    the study and its replica where the replica is given, each store's own result in `detail`. Estimates and
    intervals of the Findings are in points (the Holm-level interval of the decisive scope); clean_tolerance and
    sesoi are fractions (0.01 = 1 point)."""
    table = study_verdicts(test_rows, ablation_rows=ablation_rows, strong_rows=strong_rows, replica=replica,
                           eps_small=eps_small, eps_large=eps_large, clean_tolerance=clean_tolerance, sesoi=sesoi,
                           alpha=alpha)
    claims = {f"06_tima_vs_best_{tag}_eps": (tag, eps) for tag, eps in (("small", eps_small), ("large", eps_large))}
    texts = {fid: claim for fid, _, _, claim in ABLATION_CLAIMS}
    rule = (f"interval = mean over runs +- t(Welch-Satterthwaite df) x sqrt(between-run variance / runs + image-"
            f"sampling variance), at the Holm level of the claim in 06's family (family-wise {alpha:.0%}); "
            f"no difference if it lies inside +-{100 * sesoi:g} point (the smallest effect of interest); reproduced "
            f"if it lies above 0; not reproduced if below 0; inconclusive otherwise (docs/VERDICT_RULES.md)")
    out = []
    for fid in dict.fromkeys(table.finding):
        rows = table[table.finding == fid]
        dec = rows[rows.decisive].iloc[0]
        others = rows[~rows.decisive]
        scope_note = ("pooled over the CPU store and the H100 replica (two selections of the same study)"
                      if dec.scope == "pooled" else "CPU store")
        per_store = "; ".join(f"{_SCOPE_NAME[o.scope]}: {o.verdict}, {_scope_text(o)} ({_level_text(o.level)})"
                              for _, o in others.iterrows())
        ci95 = _scope_text({"estimate": dec.estimate, "low": dec.low95, "high": dec.high95})
        stats_note = (f"{dec.runs} runs; 95% interval {ci95}; "
                      f"p = {dec.p:.2g}, Holm-adjusted {dec.p_holm:.2g}; SE {100 * dec.se:.2f} point(s) = seeds "
                      f"{100 * dec.seed_se:.2f} (+) images {100 * dec.image_se:.2f}; per-run differences "
                      f"{[[round(100 * d, 1) for d in part] for part in dec.per_run]}")
        level = _level_text(dec.level)
        if fid in claims:
            tag, eps = claims[fid]
            out.append(Finding(
                id=fid, notebook="06",
                claim=f"TIMA is more robust than the best baseline at {tag} eps ({eps:g}/255) at a comparable clean accuracy.",
                criterion=(f"TIMA minus the baseline with the highest mean PGD-10 accuracy at {eps:g}/255 among "
                           f"{', '.join(baselines())} (each at its validation-selected configuration), paired by train "
                           f"seed, mean over the zero-shot test tasks, {scope_note}; {rule}; 'reproduced' also needs "
                           f"the clean difference's upper end at least -{100 * clean_tolerance:g} point (else mixed)."),
                paper="TIMA above TeCoA, PMG-AFT and FARE at eps 1/255 and 4/255 (main tables)",
                ours=(f"TIMA - {dec.b}, {dec.scope}: {_scope_text(dec)} points at {eps:g}/255 ({level}); clean "
                      f"{_scope_text(dec, clean=True)}" + (f"; {per_store}" if per_store else "")),
                estimate=100 * dec.estimate, ci_low=100 * dec.low, ci_high=100 * dec.high, verdict=dec.verdict,
                figure=figure, detail=stats_note + "."))
        elif fid == "06_no_gradient_masking":
            tol = 100 * MASKING_TOLERANCE
            gaps = strong_gaps(strong_rows, eps=eps_large)
            n = strong_rows[0]["evaluation"]["n"]
            order = ", ".join(f"{g.method} {g.aa:.1f}" for g in gaps.sort_values("aa", ascending=False).itertuples())
            out.append(Finding(
                id=fid, notebook="06",
                claim=("TIMA's robustness holds under AutoAttack's gradient attacks as TeCoA's does (no gradient "
                       "masking from margins or distillation)."),
                criterion=(f"gap = PGD-10 minus {STRONG_ATTACK_NAME} accuracy at {eps_large:g}/255 on the same first "
                           f"{n} test images of every task, mean over tasks; excess = TIMA's gap minus TeCoA's (same "
                           f"run, same images), {scope_note}; interval over runs (seed level) with the measured "
                           f"image-sampling term, at its Holm level: reproduced if its upper end is at most {tol:g} "
                           f"points; not reproduced if its lower end is above {tol:g}; inconclusive otherwise."),
                paper="TIMA reports AutoAttack results in line with PGD",
                ours=(f"excess of TIMA's gap over TeCoA's, {dec.scope}: {_scope_text(dec)} points ({level})"
                      + (f"; {per_store}" if per_store else "")),
                estimate=100 * dec.estimate, ci_low=100 * dec.low, ci_high=100 * dec.high, verdict=dec.verdict,
                figure="", detail=(stats_note + f". CPU store, accuracy under {STRONG_ATTACK_NAME}: {order} %; "
                                   "gaps " + ", ".join(f"{g.method} {g.gap:.1f} [{g.gap_low:.1f}, {g.gap_high:.1f}]"
                                                       for g in gaps.itertuples()) + ".")))
        else:
            out.append(Finding(
                id=fid, notebook="06", claim=texts[fid] + ".",
                criterion=(f"{dec.a} minus {dec.b}, PGD-10 accuracy at {eps_large:g}/255 on the ablation images, "
                           f"paired by train seed, {scope_note}; {rule}."),
                paper="each module improves robustness (TIMA's ablation tables)",
                ours=(f"{dec.a} - {dec.b}, {dec.scope}: {_scope_text(dec)} points at {eps_large:g}/255 ({level})"
                      + (f"; {per_store}" if per_store else "")),
                estimate=100 * dec.estimate, ci_low=100 * dec.low, ci_high=100 * dec.high, verdict=dec.verdict,
                figure="figures/06_ablations.png", detail=stats_note + "."))
    return out
