"""The pre-registered confirmatory experiment of notebook 06 (issue 22): its plan as data, its runs, its verdicts.

The plan (docs/CONFIRMATORY_PLAN.md, committed before any of its runs) has three phases, each a stage of one
resumable store (:data:`nbhelpers.paths.CONFIRM_STORE`):

- ``round2``: a second round of the search on the validation tasks, :data:`methods.EXTENSION` more configurations per
  studied method (each record's ``round2`` grid, from its round-1 pick in the CPU store), evaluated exactly as round 1
  (same tasks, images, attack and key spec). The confirmatory selection is the declared rule over both rounds.
- ``confirmatory``: the arms (:func:`arms`: TIMA at that selection; PMG-AFT at every setting a selection has produced;
  TeCoA as the positive control; TAI at TIMA's TAI strength) x :attr:`Plan.train_seeds` fresh training seeds, each
  seed scored on its own fresh rendering of the five test tasks (evaluation seed ``eval_seed_offset + seed``):
  clean and PGD-10 at 1 and 4/255 on 1024 images per task.
- ``confirmatory_strong``: APGD-CE + APGD-T and PGD-10 at 4/255 on the first 128 of those images, for TIMA and TeCoA
  at the first 3 seeds (the gradient-masking check; secondary).

The analysis (:func:`comparisons`, :func:`headline`, :func:`findings_confirmatory`) is the plan's decision rule: paired
differences TIMA - arm over the shared seeds, Student-t intervals (each seed saw its own images, so the spread of
the seeds holds the image sampling too), Holm across the family, the smallest effect of interest of 1 point.
Training and evaluation are :class:`nbhelpers.study_runs.StudyRunner`'s, so a row here is computed as a row of 06.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from nbhelpers import findings, methods, paths, study, study_runs
from nbhelpers.config import StudyConfig, TAIKnobs, cli_parser, split_overrides
from nbhelpers.findings import (INCONCLUSIVE, MIXED, NO_DIFFERENCE, NOT_REPRODUCED, REPRODUCED, Effect, Finding,
                                effect_interval, holm, judge_effect, judge_noninferior)
from nbhelpers.utils import code_version

ROUND2, CONFIRM, CONFIRM_STRONG = "round2", "confirmatory", "confirmatory_strong"
PHASES: tuple[str, ...] = (ROUND2, CONFIRM, CONFIRM_STRONG)
PLAN_DOC = paths.PROJECT_ROOT / "docs" / "CONFIRMATORY_PLAN.md"


@dataclass(frozen=True)
class Plan:
    """Everything the confirmatory run does and how it is judged, fixed before it runs (docs/CONFIRMATORY_PLAN.md).
    Accuracies and tolerances are fractions (0.01 = 1 point); eps in 1/255 units."""

    train_seeds: tuple[int, ...] = tuple(range(101, 113))  # 12 fresh seeds (06 used 0, 1, 2), shared by every arm
    eval_seed_offset: int = 1000  # seed s is scored on evaluation seed 1000 + s (06 used 0 only)
    test_images: int = 1024  # first-N images per test task of each seed's rendering
    eps: tuple[float, ...] = (1.0, 4.0)  # PGD-10 radii
    primary_eps: float = 4.0  # the headline's radius
    strong_arms: tuple[str, ...] = ("tima", "tecoa")  # the masking check: TIMA's PGD-minus-APGD gap over TeCoA's
    strong_seeds: int = 3  # ... at the first 3 training seeds
    strong_images: int = 128  # ... on the first 128 images per task
    strong_eps: float = 4.0
    sesoi: float = findings.SESOI  # 1 point: "level" needs every interval inside +-1 point
    alpha: float = findings.FAMILY_ALPHA  # Holm across every TIMA - arm comparison at 1 and 4/255
    clean_tolerance: float = 0.01  # "more robust" needs the clean difference's lower end >= -1 point
    masking_tolerance: float = study.MASKING_TOLERANCE  # 2 points (secondary check)
    collapse_drop: float = 0.10  # a run whose clean accuracy is > 10 points below its arm's median is a collapse
    workers: int = 2  # worker processes ...
    threads: int = 1  # ... of one torch thread each (2 x 1 runs ~1.4x faster than 1 x 2 on 2 cores)

    def eval_seed(self, train_seed: int) -> int:
        """The evaluation seed (test images and attack starts) of a training seed's runs."""
        return self.eval_seed_offset + int(train_seed)


PLAN = Plan()
# Studied methods registered after the plan's commit (docs/CONFIRMATORY_PLAN.md, "Deviations"): round 2 gives them
# its 3 configurations by their record's rule, on a later commit, so that every method of 06's search has the same
# budget; they are no arm, so the confirmatory phases and their analysis are the plan's, unchanged.
ADDED_AFTER_PLAN: tuple[str, ...] = ("pmg_aft_code",)


@dataclass(frozen=True)
class Arm:
    """One arm of the confirmatory run: a method record trained at one configuration."""

    name: str  # e.g. "tima", "pmg_aft_a1", "tecoa", "tai_matched"
    method: str  # the record it trains as (nbhelpers.methods)
    overrides: dict
    role: str  # "tested", "comparator", "positive control", "IAT ablation"
    source: str  # where its configuration comes from


def arm_label(arm: Arm) -> str:
    """A reader's label of an arm: its method, the knobs that tell arms of one method apart, and its role (e.g.
    'PMG-AFT as its paper writes it, alpha = beta = 2 (comparator)' for the arm stored as 'pmg_aft_a2')."""
    label = methods.get(arm.method).label
    if arm.method == "pmg_aft":
        label = f"{label} as its paper writes it, alpha = beta = {float(arm.overrides['pmg_alpha']):g}"
        if "_lr" in arm.name:
            label += f", lr {float(arm.overrides['finetune_lr']):g}"
    return f"{label} ({arm.role})"


# ---------------------------------------------------------------------------------------------- round 2
def study_config() -> StudyConfig:
    """06's study configuration (its defaults): the recipe, the validation spec, the selection rule."""
    return StudyConfig.from_params(rerun=True)


def round1_rows(store_path: str | Path = paths.STUDY_STORE, cfg: StudyConfig | None = None) -> list[dict]:
    """Round 1: the current validation rows of a 06 store (the CPU store, or the H100 replica)."""
    cfg = cfg or study_config()
    return study_runs.current_rows(study.StudyStore(store_path), cfg, "validation")


def round2_space(round1: Sequence[Mapping], cfg: StudyConfig | None = None) -> dict[str, list[dict]]:
    """{study method: its round-2 configurations} from its round-1 pick (each record's round2 grid)."""
    cfg = cfg or study_config()
    picks = study.select(round1, rule=study_runs.selection_rule(cfg))
    defaults = study.knob_defaults()
    out = {}
    for name in study.study_methods():
        grid = methods.get(name).round2
        if grid is None:
            raise ValueError(f"study method {name!r} has no round-2 grid in its record")
        out[name] = grid(picks[name], defaults, study.LR_GRID[cfg.profile], cfg.finetune_steps)
        if len(out[name]) != methods.EXTENSION:
            raise ValueError(f"{name}: {len(out[name])} round-2 configurations, not {methods.EXTENSION}")
    return out


def arms(round1: Sequence[Mapping], round1_replica: Sequence[Mapping], round2: Sequence[Mapping],
         cfg: StudyConfig | None = None) -> list[Arm]:
    """The arms, in the plan's order: TIMA (selection over both rounds); PMG-AFT at every setting a selection has
    produced (round 1 CPU, round 1 H100, both rounds; duplicates once); TeCoA (both rounds); TAI at TIMA's
    fine-tuning knobs (its learning rate and TAI strength: only the text differs)."""
    cfg = cfg or study_config()
    rule = study_runs.selection_rule(cfg)
    expected = {(m, study.config_id(c)) for m, cs in round2_space(round1, cfg).items() for c in cs}
    stored = {(r["method"], study.config_id(r["overrides"])) for r in round2}
    if expected - stored:
        raise RuntimeError(f"the arms need every round-2 row: {len(expected - stored)} of {len(expected)} missing "
                           "(run the round2 phase first)")
    both = study.select([*round1, *round2], rule=rule)
    tima = dict(both["tima"])
    out = [Arm("tima", "tima", tima, "tested", "selection over rounds 1 and 2 (CPU)")]
    sources = (("round 1 (CPU)", study.select(round1, rule=rule)["pmg_aft"]),
               ("round 1 (H100 replica)", study.select(round1_replica, rule=rule)["pmg_aft"]),
               ("rounds 1 and 2 (CPU)", both["pmg_aft"]))
    seen: dict[str, Arm] = {}
    for source, over in sources:
        cid = study.config_id(over)
        if cid in seen:
            arm = seen[cid]
            seen[cid] = dataclasses.replace(arm, source=f"{arm.source}; {source}")
            continue
        seen[cid] = Arm(f"pmg_aft_a{float(over['pmg_alpha']):g}", "pmg_aft", dict(over), "comparator", source)
    pmg = list(seen.values())
    if len({a.name for a in pmg}) < len(pmg):  # the same alpha at two learning rates: name the rate too
        pmg = [dataclasses.replace(a, name=f"{a.name}_lr{float(a.overrides['finetune_lr']):g}") for a in pmg]
    out += pmg
    out.append(Arm("tecoa", "tecoa", dict(both["tecoa"]), "positive control", "selection over rounds 1 and 2 (CPU)"))
    ft, _ = split_overrides(tima)
    tai = {"finetune_lr": ft["finetune_lr"], "asam_gain": ft.get("asam_gain", TAIKnobs.defaults()["asam_gain"]),
           "takd_weight": ft.get("takd_weight", TAIKnobs.defaults()["takd_weight"])}
    out.append(Arm("tai_matched", "tai", tai, "IAT ablation", "TIMA's learning rate and TAI strength"))
    return out


# ---------------------------------------------------------------------------------------------- the runs
def evaluation_spec(phase: str, train_seed: int, cfg: StudyConfig | None = None, plan: Plan = PLAN) -> dict:
    """A phase's evaluation (part of every row's key): round 2 is round 1's validation spec; the confirmatory phases
    score seed s on evaluation seed plan.eval_seed(s)."""
    cfg = cfg or study_config()
    if phase == ROUND2:
        return study_runs.stage_evaluation(cfg, "validation")
    seeded = dataclasses.replace(cfg, seed=plan.eval_seed(train_seed))
    if phase == CONFIRM:
        return study_runs.stage_evaluation(dataclasses.replace(seeded, test_images=plan.test_images,
                                                               test_eps_list=list(plan.eps)), "test")
    if phase == CONFIRM_STRONG:
        return study_runs.stage_evaluation(dataclasses.replace(seeded, strong_images=plan.strong_images,
                                                               strong_eps=plan.strong_eps), "strong")
    raise ValueError(f"unknown phase {phase!r}; choose from {PHASES}")


def planned(phase: str, store: study.StudyStore, *, cfg: StudyConfig | None = None, plan: Plan = PLAN,
            round1: Sequence[Mapping] | None = None, round1_replica: Sequence[Mapping] | None = None) -> list[dict]:
    """Every run of a phase, in the plan's order (seeds outermost): {key, stage, arm, method, overrides, train_seed,
    evaluation}. The confirmatory phases need the round-2 rows (their arms depend on them)."""
    cfg = cfg or study_config()
    round1 = round1_rows(cfg=cfg) if round1 is None else round1
    items = []
    if phase == ROUND2:
        for name, configs in round2_space(round1, cfg).items():
            items += [(name, name, c, 0) for c in configs]
    else:
        replica = round1_rows(paths.STUDY_REPLICA_STORE, cfg) if round1_replica is None else round1_replica
        the_arms = arms(round1, replica, store.rows(stage=ROUND2), cfg)
        if phase == CONFIRM:
            items = [(a.name, a.method, a.overrides, s) for s in plan.train_seeds for a in the_arms]
        elif phase == CONFIRM_STRONG:
            items = [(a.name, a.method, a.overrides, s) for s in plan.train_seeds[:plan.strong_seeds]
                     for a in the_arms if a.name in plan.strong_arms]
        else:
            raise ValueError(f"unknown phase {phase!r}; choose from {PHASES}")
    out = []
    for arm, method, over, seed in items:
        spec = evaluation_spec(phase, seed, cfg, plan)
        key = study.row_key(stage=phase, method=method, overrides=over, train_seed=seed, evaluation=spec)
        out.append({"key": key, "stage": phase, "arm": arm, "method": method, "overrides": dict(over),
                    "train_seed": seed, "evaluation": spec})
    return out


def run_worker(phase: str, *, worker: int, workers: int, store_path: str | Path = paths.CONFIRM_STORE,
               device: str = "cpu", progress: bool = False) -> int:
    """Compute this worker's share (plan position mod workers) of a phase's missing runs; returns how many."""
    torch.set_num_threads(PLAN.threads)
    store = study.StudyStore(store_path)
    cfg = study_config()
    stored = {r["key"] for r in store.rows()}
    todo = [item for i, item in enumerate(planned(phase, store, cfg=cfg)) if i % workers == worker
            and item["key"] not in stored]
    if not todo:
        return 0
    runner = study_runs.StudyRunner(cfg, device=device, progress=progress)
    code = code_version()
    for item in todo:
        t0 = time.time()
        own = runner.models(item["method"], item["overrides"], item["train_seed"])["own"]
        scores, per_sample = runner.scores({"own": own}, item["evaluation"])
        row = {**item, "scores": {k: float(v) for k, v in scores.items()}, "seconds": round(time.time() - t0, 1),
               "threads": torch.get_num_threads(), "code": code}
        if per_sample:
            row["per_sample"] = dict(per_sample)
        store.append(row)
        print(json.dumps({"phase": phase, "worker": worker, "arm": item["arm"], "seed": item["train_seed"],
                          "seconds": row["seconds"]}), flush=True)
    return len(todo)


def run_all(*, store_path: str | Path = paths.CONFIRM_STORE, workers: int = PLAN.workers, device: str = "cpu",
            phases: Sequence[str] = PHASES) -> None:
    """Run the phases in order, each split over `workers` processes of PLAN.threads threads (resumable)."""
    for phase in phases:
        env = {**os.environ, "OMP_NUM_THREADS": str(PLAN.threads)}
        procs = [subprocess.Popen([sys.executable, "-m", "nbhelpers.confirm", "--phase", phase, "--worker", str(w),
                                   "--workers", str(workers), "--store", str(store_path), "--device", device],
                                  env=env) for w in range(workers)]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise RuntimeError(f"phase {phase}: worker exit codes {codes}")


def status(store_path: str | Path = paths.CONFIRM_STORE, *, plan: Plan = PLAN) -> pd.DataFrame:
    """Per phase: runs planned and stored (a confirmatory phase before round 2 is complete: planned unknown)."""
    store = study.StudyStore(store_path)
    stored = {r["key"] for r in store.rows()}
    out = []
    for phase in PHASES:
        try:
            items = planned(phase, store, plan=plan)
        except RuntimeError:
            out.append({"phase": phase, "planned": math.nan, "stored": len(store.rows(stage=phase))})
            continue
        out.append({"phase": phase, "planned": len(items), "stored": sum(i["key"] in stored for i in items)})
    return pd.DataFrame(out)


def _is_complete(table: pd.DataFrame) -> bool:
    """Whether a status table has every planned run of every phase stored."""
    return bool(table.planned.notna().all() and (table.planned == table.stored).all())


# ---------------------------------------------------------------------------------------------- analysis
def _by_arm(rows: Sequence[Mapping]) -> dict[str, dict[int, dict[str, float]]]:
    out: dict[str, dict[int, dict[str, float]]] = {}
    for r in rows:
        out.setdefault(str(r["arm"]), {})[int(r["train_seed"])] = dict(r["scores"])
    return out


def collapses(rows: Sequence[Mapping], *, plan: Plan = PLAN) -> dict[str, list[int]]:
    """{arm: seeds whose clean accuracy is more than plan.collapse_drop below the arm's median}."""
    out = {}
    for arm, seeds in _by_arm(rows).items():
        med = float(np.median([s["clean"] for s in seeds.values()]))
        out[arm] = sorted(k for k, s in seeds.items() if s["clean"] < med - plan.collapse_drop)
    return out


def arm_summary(rows: Sequence[Mapping], *, plan: Plan = PLAN) -> pd.DataFrame:
    """Per arm: seeds, and per score the mean and sd over seeds (points)."""
    metrics = ["clean", *(study.robust_metric(e) for e in plan.eps)]
    lost = collapses(rows, plan=plan)
    out = []
    for arm, seeds in _by_arm(rows).items():
        line: dict[str, object] = {"arm": arm, "seeds": len(seeds), "collapses": len(lost[arm])}
        for m in metrics:
            v = 100 * np.array([s[m] for s in seeds.values()])
            line[m] = float(v.mean())
            line[f"{m}_sd"] = float(v.std(ddof=1)) if v.size > 1 else math.nan
        out.append(line)
    return pd.DataFrame(out)


def _diffs(by: Mapping[str, Mapping[int, Mapping[str, float]]], a: str, b: str, metric: str,
           drop: Sequence[int] = ()) -> np.ndarray:
    seeds = sorted(set(by[a]) & set(by[b]) - set(drop))
    return np.array([by[a][s][metric] - by[b][s][metric] for s in seeds], dtype=float)


def comparisons(rows: Sequence[Mapping], *, plan: Plan = PLAN, tested: str = "tima") -> pd.DataFrame:
    """The family: TIMA - arm at every radius of the plan, paired over shared seeds (fractions), each with its
    Holm level, interval at that level, verdict (findings.judge_effect, SESOI), the clean difference at the same
    level, the Wilcoxon signed-rank p (sensitivity) and the estimate without the collapsed runs (sensitivity)."""
    by = _by_arm(rows)
    lost = collapses(rows, plan=plan)
    lines = []
    for eps in sorted(plan.eps, key=lambda e: e != plan.primary_eps):
        metric = study.robust_metric(eps)
        for arm in by:
            if arm == tested:
                continue
            d = _diffs(by, tested, arm, metric)
            lines.append({"arm": arm, "metric": metric, "eps": eps, "effect": effect_interval(d),
                          "clean": effect_interval(_diffs(by, tested, arm, "clean")),
                          "wilcoxon_p": float(stats.wilcoxon(d).pvalue) if d.size > 1 and np.any(d != 0) else math.nan,
                          "without_collapses": float(_diffs(by, tested, arm, metric, [*lost[tested], *lost[arm]])
                                                     .mean()),
                          "seeds": int(d.size)})
    levels, adjusted = holm([ln["effect"].p for ln in lines], alpha=plan.alpha)
    out = []
    for ln, level, p_adj in zip(lines, levels, adjusted):
        eff: Effect = ln["effect"].at_level(level)
        clean: Effect = ln["clean"].at_level(level)
        out.append({"arm": ln["arm"], "metric": ln["metric"], "eps": ln["eps"], "seeds": ln["seeds"],
                    "estimate": eff.estimate, "low": eff.low, "high": eff.high, "level": level, "p": eff.p,
                    "p_holm": p_adj, "verdict": judge_effect(eff, sesoi=plan.sesoi),
                    "clean_estimate": clean.estimate, "clean_low": clean.low, "clean_high": clean.high,
                    "wilcoxon_p": ln["wilcoxon_p"], "without_collapses": ln["without_collapses"]})
    return pd.DataFrame(out)


def headline(table: pd.DataFrame, arms_: Sequence[Arm], *, eps: float, plan: Plan = PLAN) -> str:
    """The plan's decision on 'TIMA is more robust than PMG-AFT' at eps, over every PMG-AFT arm:
    reproduced (more robust): every arm's verdict is reproduced and every clean lower end >= -clean_tolerance;
    mixed: every arm reproduced, some clean cost beyond the tolerance; no difference (level): every arm's interval
    inside +-SESOI; not reproduced: some arm's interval lies below 0 (beyond the SESOI band); inconclusive otherwise."""
    names = [a.name for a in arms_ if a.method == "pmg_aft"]
    sub = table[(table["eps"] == eps) & table["arm"].isin(names)]
    if len(sub) != len(names) or not names:
        return INCONCLUSIVE
    verdicts = list(sub["verdict"])
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED if (sub["clean_low"] >= -plan.clean_tolerance).all() else MIXED
    if all(v == NO_DIFFERENCE for v in verdicts):
        return NO_DIFFERENCE
    if any(v == NOT_REPRODUCED for v in verdicts):
        return NOT_REPRODUCED
    return INCONCLUSIVE


def masking(strong_rows: Sequence[Mapping], *, plan: Plan = PLAN) -> dict[str, object]:
    """Secondary: per seed, TIMA's PGD-10 minus APGD gap minus TeCoA's (same seed, same images), its mean with a
    95% t-interval over seeds, and the non-inferiority verdict at plan.masking_tolerance (fractions)."""
    by = _by_arm(strong_rows)
    pgd, aa = study.robust_metric(plan.strong_eps), f"aa@{plan.strong_eps:g}"
    if "tima" not in by or "tecoa" not in by:
        return {"seeds": 0, "verdict": INCONCLUSIVE, "estimate": math.nan, "low": math.nan, "high": math.nan}
    seeds = sorted(set(by["tima"]) & set(by["tecoa"]))
    d = [(by["tima"][s][pgd] - by["tima"][s][aa]) - (by["tecoa"][s][pgd] - by["tecoa"][s][aa]) for s in seeds]
    eff = effect_interval(d)
    return {"seeds": len(seeds), "estimate": eff.estimate, "low": eff.low, "high": eff.high,
            "verdict": judge_noninferior(eff, margin=plan.masking_tolerance)}


def complete(store: study.StudyStore, *, plan: Plan = PLAN) -> bool:
    """Whether every planned run of every phase is stored (the analysis is confirmatory only then)."""
    return _is_complete(status(store.path, plan=plan))


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _interval(line: Mapping, prefix: str) -> str:
    """'+1.0 [+0.2, +1.7]' in points from a line's <prefix>estimate, <prefix>low, <prefix>high (fractions)."""
    return study_runs.format_interval(line[f"{prefix}estimate"], line[f"{prefix}low"], line[f"{prefix}high"],
                                      signed=True)


def findings_confirmatory(rows: Sequence[Mapping], strong_rows: Sequence[Mapping], arms_: Sequence[Arm], *,
                          plan: Plan = PLAN) -> list[Finding]:
    """06's confirmatory findings (ids 06_confirm_*), every verdict from the plan's rule."""
    table = comparisons(rows, plan=plan)
    crit = (f"pre-registered (docs/CONFIRMATORY_PLAN.md): paired TIMA - arm over {len(plan.train_seeds)} fresh seeds, "
            "each on fresh test images; t-intervals at the Holm level; SESOI 1 point")
    scope = (f"mini world, mini CLIP; {len(plan.train_seeds)} fresh training seeds, plan committed before the runs; "
             "intervals over seeds (each on its own test images)")
    out = []

    def line(arm: str, eps: float) -> pd.Series:
        return table[(table["arm"] == arm) & (table["eps"] == eps)].iloc[0]

    pmg = [a.name for a in arms_ if a.method == "pmg_aft"]
    for eps, fid in ((plan.primary_eps, "06_confirm_pmg_aft_4"), (1.0, "06_confirm_pmg_aft_1")):
        verdict = headline(table, arms_, eps=eps, plan=plan)
        parts = [f"{a} {_interval(line(a, eps), '')}"
                 for a in pmg]
        worst = min(pmg, key=lambda a: line(a, eps)["low"])  # the arm whose interval limits the verdict
        w = line(worst, eps)
        clean = "; ".join(f"{a} {_interval(line(a, eps), 'clean_')}" for a in pmg)
        lost = collapses(rows, plan=plan)
        hit = [f"{a} seed {s}" for a in [*pmg, "tima"] for s in lost.get(a, [])]
        sens = "; ".join(f"{a} {_pts(line(a, eps)['without_collapses'])}" for a in pmg)
        out.append(Finding(fid, "06", f"TIMA is more robust than PMG-AFT at {eps:g}/255 (confirmatory, every PMG-AFT "
                           "setting a selection produced)",
                           crit + "; reproduced only if every PMG-AFT arm's interval is above 0 with the clean "
                           "difference's lower end >= -1 point; no difference if every interval is inside +-1",
                           "", "; ".join(parts) + " points", 100 * w["estimate"], 100 * w["low"], 100 * w["high"],
                           verdict, "figures/06_confirmatory.png",
                           scope=scope,
                           detail=f"estimate and interval: the arm whose interval reaches lowest ({worst}), the "
                                  f"one that limits the verdict; clean "
                                  f"differences {clean} points; collapses: {', '.join(hit) or 'none'} (they count; "
                                  f"without them: {sens} points)"))
    for arm, fid, claim in (("tecoa", "06_confirm_tecoa_control", "TIMA is more robust than TeCoA at 4/255 "
                             "(positive control: the experiment can detect a difference)"),
                            ("tai_matched", "06_confirm_iat_matched", "IAT adds robustness to TAI at 4/255, TAI at "
                             "TIMA's own TAI strength (the ablation at matched strength)")):
        r = line(arm, plan.primary_eps)
        out.append(Finding(fid, "06", claim, crit, "", f"{_interval(r, '')}"
                           " points", 100 * r["estimate"], 100 * r["low"], 100 * r["high"], str(r["verdict"]),
                           "figures/06_confirmatory.png", scope=scope))
    m = masking(strong_rows, plan=plan)
    out.append(Finding("06_confirm_masking", "06", "TIMA's robustness is not gradient masking (confirmatory, "
                       "secondary: outside the Holm family)",
                       "TIMA's PGD-10 minus APGD-CE + APGD-T gap at 4/255 exceeds TeCoA's by at most 2 points "
                       "(95% t-interval over the first 3 seeds, 128 images per task each)", "",
                       f"{_interval(m, '')} points", 100 * m["estimate"],
                       100 * m["low"], 100 * m["high"], str(m["verdict"]), "", scope=scope))
    return out


def round2_table(round1: Sequence[Mapping], round2: Sequence[Mapping], cfg: StudyConfig | None = None) -> pd.DataFrame:
    """Every configuration of both rounds ranked by the declared rule (study.rank_configs), with its round."""
    cfg = cfg or study_config()
    ranked = study.rank_configs([*round1, *round2], rule=study_runs.selection_rule(cfg))
    second = {(r["method"], study.config_id(r["overrides"])) for r in round2}
    return ranked.assign(round=[2 if (m, c) in second else 1 for m, c in zip(ranked.method, ranked.config_id)])


def report(store_path: str | Path = paths.CONFIRM_STORE, *, plan: Plan = PLAN) -> dict[str, object]:
    """What notebook 06 renders: status, round-2 ranking, arms, and once the store is complete (only then) the
    per-arm summary, the comparisons, the masking check and the findings."""
    store = study.StudyStore(store_path)
    cfg = study_config()
    round1, round2 = round1_rows(cfg=cfg), store.rows(stage=ROUND2)
    table = status(store_path, plan=plan)
    out: dict[str, object] = {"status": table, "complete": _is_complete(table),
                              "round2": round2_table(round1, round2, cfg) if round2 else None,
                              "arms": None, "codes": sorted({r.get("code", "") for r in store.rows()})}
    try:
        out["arms"] = arms(round1, round1_rows(paths.STUDY_REPLICA_STORE, cfg), round2, cfg)
    except RuntimeError:
        return out
    if out["complete"]:
        rows, strong = store.rows(stage=CONFIRM), store.rows(stage=CONFIRM_STRONG)
        out.update(summary=arm_summary(rows, plan=plan), comparisons=comparisons(rows, plan=plan),
                   masking=masking(strong, plan=plan), collapses=collapses(rows, plan=plan),
                   findings=findings_confirmatory(rows, strong, out["arms"], plan=plan))
    return out


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The confirmatory experiment CLI's parser."""
    ap = cli_parser("the confirmatory experiment of notebook 06 (resumable)", prog="python -m nbhelpers.confirm")
    ap.add_argument("--run", action="store_true", help="run every phase that the store lacks, in order")
    ap.add_argument("--status", action="store_true", help="print what is planned and stored, compute nothing")
    ap.add_argument("--phase", choices=PHASES, help="(a worker) the phase to compute a share of (default: none)")
    ap.add_argument("--worker", type=int, default=0, help="(a worker) its index among --workers")
    ap.add_argument("--workers", type=int, default=PLAN.workers, help="worker processes that share each phase")
    ap.add_argument("--store", default=str(paths.CONFIRM_STORE), help="the experiment's JSON-lines store")
    ap.add_argument("--device", default="cpu", help='"cpu", "cuda" or "cuda:N"')
    return ap


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m nbhelpers.confirm --run | --status (the plan: docs/CONFIRMATORY_PLAN.md)."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.workers < 1 or not 0 <= args.worker < args.workers:
        ap.error(f"--worker must be in [0, --workers), got {args.worker} of {args.workers}")
    if args.phase:
        n = run_worker(args.phase, worker=args.worker, workers=args.workers, store_path=args.store,
                       device=args.device)
        print(json.dumps({"phase": args.phase, "worker": args.worker, "computed": n}))
        return 0
    if args.run:
        run_all(store_path=args.store, workers=args.workers, device=args.device)
    print(status(args.store).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
