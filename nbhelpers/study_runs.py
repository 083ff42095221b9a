"""Runs the study of notebook 06: trains each configuration (IAT text first for TIMA and the IAT variants, the
margin offset for TAI), evaluates it on the validation or the test tasks, and appends one row to the store.

Four stages, each resumable (:func:`nbhelpers.study.run_missing` skips what the store holds):

- ``validation``: every configuration of :func:`study.search_space`, first train seed, validation tasks only,
  clean and PGD at ``select_eps``; :func:`study.select` then picks one configuration per method (declared rule).
- ``test``: the selected configurations at every train seed, the zero-shot test tasks, clean and PGD at
  ``test_eps_list``.
- ``strong``: AutoAttack (APGD-CE + APGD-T) and PGD at ``strong_eps`` on the same first ``strong_images`` of every
  test task, for ``strong_methods`` at ``strong_seeds`` (the gradient-masking check); these rows also keep the
  per-image correctness (``per_sample``) so that PGD-minus-AA gaps are compared with paired intervals.
- ``ablation``: TIMA's ablation variants (:data:`study.ABLATIONS`) and the references TeCoA, TAI and TIMA, every
  train seed, ``ablation_images`` per test task at ``ablation_eps_list``; IAT variants also with the original text.

The CLI computes a stage's runs in this process (:func:`run_study`) or, with ``--dispatch local|slurm``, as
submitit jobs that each write a shard merged into the store in plan order (:func:`dispatch_study`,
:mod:`nbhelpers.dispatch`); either way the store ends with the same rows.

A row's key holds its evaluation, and that holds :func:`numerics_fingerprint` (the numerics versions of everything
that trains or evaluates), so rows computed by code with other numbers are never taken for this code's: a rerun
recomputes them; a comment or a refactor that changes no number keeps every row.
Scores are accuracies (fractions): ``clean``, ``robust@<eps>`` (PGD), ``aa@<eps>``, each the mean over the tasks,
and per task as ``<score>/<task>``; the original-text evaluation of an IAT variant is prefixed ``original_text:``.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from nbhelpers import (attacks, data, dispatch, evaluation, fastpath, losses, methods, metrics, models, notebook,
                       paper_data, paths, study, suite, text_tuning, training, world, zeroshot)
from nbhelpers.config import (DispatchConfig, FinetuneKnobs, IATKnobs, StudyConfig, TAIKnobs, add_arguments,
                              cli_parser, config_or_exit, split_overrides)
from nbhelpers.evaluation import EvalModel
from nbhelpers.models import create_model_and_transforms
from nbhelpers.utils import atomic_path, content_key, numerics_versions, select_device
from nbhelpers.zeroshot import build_head

STORE_PATH = paths.STUDY_STORE


def numerics_fingerprint() -> str:
    """Short hash of the numerics versions (utils.numerics_versions) of every module that could change a score."""
    return content_key(numerics_versions(training, methods, losses, attacks, fastpath, zeroshot, text_tuning,
                                         evaluation, data, world, suite, models))


def check_config(cfg: StudyConfig) -> None:
    """Refuse what the config class cannot check by itself (names owned by the study module), before any work."""
    bad = [m for m in cfg.strong_methods if m not in study.study_methods()]
    if bad:
        raise ValueError(f"parameter 'strong_methods' has unknown method(s) {bad}; choose from "
                         f"{list(study.study_methods())}")


def check_notebook_config(cfg: StudyConfig) -> None:
    """What notebook 06 can do with a config, before any work: it renders (and with rerun computes into) the
    committed mini stores; a paper study has its own store, planned and run from the command line."""
    check_config(cfg)
    if cfg.profile != "mini":
        raise ValueError("notebook 06 renders the committed mini stores; run the paper study from the command line "
                         "(python -m nbhelpers.study_runs --plan --profile paper ..., then --store <its own store>; "
                         "docs/STUDY_PLAN.md)")


def stage_evaluation(cfg: StudyConfig, stage: str) -> dict[str, object]:
    """What a stage evaluates (tasks, images, attack, radii, seed, backbone, code): part of every row's key."""
    recipe = {n: getattr(cfg, n) for n in (*FinetuneKnobs.field_names(), *TAIKnobs.field_names(),
                                             *IATKnobs.field_names())}
    common = {"profile": cfg.profile, "model": cfg.model, "pretrained": cfg.pretrained, "checkpoint": cfg.checkpoint,
              "seed": cfg.seed, "pgd_steps": cfg.pgd_steps, "finetune_steps": cfg.finetune_steps,
              "recipe": content_key(recipe), "numerics": numerics_fingerprint(),
              **evaluation.start_identity(cfg.start_scheme())}  # "legacy" adds nothing: no mini key moves
    if stage == "validation":
        return {**common, "tasks": cfg.validation_datasets(), "n": cfg.val_images, "attack": "pgd",
                "eps": [cfg.select_eps]}
    if stage == "test":
        return {**common, "tasks": cfg.test_datasets(), "n": cfg.test_images, "attack": "pgd",
                "eps": list(cfg.test_eps_list)}
    if stage == "strong":
        return {**common, "tasks": cfg.test_datasets(), "n": cfg.strong_images, "attack": "pgd+aa",
                "eps": [cfg.strong_eps]}
    if stage == "ablation":
        return {**common, "tasks": cfg.test_datasets(), "n": cfg.ablation_images, "attack": "pgd",
                "eps": list(cfg.ablation_eps_list)}
    raise ValueError(f"unknown stage {stage!r}; choose from {study.STAGES}")


class StudyRunner:
    """Trains and evaluates one study configuration per call; the base model and the margin offset are made once."""

    def __init__(self, cfg: StudyConfig, *, device: torch.device | str = "cpu", progress: bool = False) -> None:
        check_config(cfg)
        self.cfg, self.device, self.progress = cfg, device, progress
        self.base, self.preprocess = create_model_and_transforms(**cfg.model_spec(), device=device)

    @functools.cached_property
    def margin_offset(self) -> float:
        """The pre-trained model's margin offset (cosine units) on the fine-tuning task: calibrates ASAM."""
        return suite.margin_offset_for(self.cfg, self.base, preprocess=self.preprocess,
                                       device=self.device)["offset_cosine"]

    def models(self, name: str, overrides: Mapping[str, object], train_seed: int) -> dict[str, EvalModel]:
        """{text side name: EvalModel} of a configuration: 'own' (the text it trained against) and, for IAT text,
        also 'original_text'. Trains (or loads from the cache) the image tower and tunes the text first."""
        method = methods.get(study.trained_as(name))
        ft_over, iat_over = split_overrides(overrides)
        iat_path = (suite.iat_projection_for(self.cfg, self.base, preprocess=self.preprocess, device=self.device,
                                             progress=self.progress, train_seed=train_seed, **iat_over)
                    if method.needs_iat else "")
        kw = dict(margin_offset=self.margin_offset if method.needs_offset else 0.0, iat_path=iat_path,
                  device=self.device, progress=self.progress, train_seed=train_seed, **ft_over)
        out = {"own": suite.build_eval_model(method.name, self.cfg, self.base, **kw)}
        if method.needs_iat:
            out["original_text"] = suite.with_original_text(out["own"], self.cfg, self.base, device=self.device)
        for model in out.values():  # the study's rows are named by study method or ablation variant
            model.name = model.label = name
        return out

    def scores(self, models: Mapping[str, EvalModel],
               evaluation_spec: Mapping[str, object]) -> tuple[dict[str, float], dict[str, str]]:
        """Mean and per-task accuracies of the models on the spec's tasks and images (its evaluation seed: the images
        and the attacks' random starts; see the module docstring for the names), and
        for the strong stage the own text's per-image correctness {"<metric>/<task>": packed hex} (paired checks)."""
        spec = evaluation_spec
        pgd = f"pgd{self.cfg.pgd_steps}"
        kw = dict(attacks=[pgd], eps_list=list(spec["eps"]))
        if spec["attack"] == "pgd+aa":  # AutoAttack and PGD on the same images (the gradient-masking check)
            kw.update(strong_attacks=["aa"], strong_eps_list=list(spec["eps"]))
        rows = evaluation.evaluate(dict(models), profile=self.cfg.profile, datasets=list(spec["tasks"]), n=int(spec["n"]),
                                   seed=int(spec["seed"]), batch_size=self.cfg.batch_size, data_root=self.cfg.data_root,
                                   device=self.device, fast=self.cfg.fast_attacks, amp=self.cfg.amp,
                                   progress=self.progress, start=self.cfg.start_scheme(), **kw)
        out: dict[str, float] = {}
        per_sample: dict[str, str] = {}
        for r in rows.itertuples(index=False):
            name = "clean" if r.attack == "clean" else f"{'robust' if r.attack == pgd else r.attack}@{r.eps:g}"
            prefix = "" if r.model == "own" else f"{r.model}:"
            out[f"{prefix}{name}/{r.dataset}"] = float(r.accuracy)
            if spec["attack"] == "pgd+aa" and r.model == "own":
                if int(r.n) != int(spec["n"]):
                    raise ValueError(f"{r.dataset} has {r.n} images, fewer than the strong stage's {spec['n']}")
                per_sample[f"{name}/{r.dataset}"] = str(r.correct)
        for key in list(out):
            metric = key.split("/")[0]
            if metric not in out:
                vals = [v for k, v in out.items() if k.split("/")[0] == metric and "/" in k]
                out[metric] = sum(vals) / len(vals)
        return out, per_sample

    def run_config(self, stage: str):
        """The study.RunConfig of a stage: (config {"method": m, **overrides}, train_seed) -> scores."""
        spec = stage_evaluation(self.cfg, stage)

        def run(config: dict[str, object], train_seed: int) -> tuple[dict[str, float], dict[str, str]]:
            overrides = {k: v for k, v in config.items() if k != "method"}
            return self.scores(self.models(str(config["method"]), overrides, train_seed), spec)
        return run


def current_rows(store: study.StudyStore, cfg: StudyConfig, stage: str) -> list[dict]:
    """The store's rows of a stage computed with this config's evaluation and this code."""
    spec = stage_evaluation(cfg, stage)
    return [r for r in store.rows(stage=stage) if r.get("evaluation") == spec]


def stage_configs(cfg: StudyConfig, store: study.StudyStore, stage: str) -> tuple[dict[str, list[dict]], list[int]]:
    """(configurations per method, train seeds) of a stage; the later stages need the validation stage's rows."""
    if stage == "validation":
        return study.search_space(profile=cfg.profile, finetune_steps=cfg.finetune_steps), [cfg.train_seeds[0]]
    val = current_rows(store, cfg, "validation")
    missing = [m for m in study.study_methods() if not any(r["method"] == m for r in val)]
    if missing:
        raise RuntimeError(f"stage {stage!r} needs the validation stage of {missing} (run it first)")
    selected = study.select(val, rule=selection_rule(cfg))
    if stage == "test":
        return {m: [selected[m]] for m in study.study_methods()}, list(cfg.train_seeds)
    if stage == "strong":
        return {m: [selected[m]] for m in cfg.strong_methods}, list(cfg.strong_seeds)
    return study.ablation_configs(selected), list(cfg.train_seeds)


def selection_rule(cfg: StudyConfig) -> study.SelectionRule:
    """The declared rule with this config's radius and tolerance."""
    return study.SelectionRule(metric=study.robust_metric(cfg.select_eps), clean_tolerance=cfg.clean_tolerance)


def run_study(cfg: StudyConfig, *, store_path: str | Path = STORE_PATH, device: torch.device | str = "cpu",
              progress: bool = True) -> dict[str, int]:
    """Compute every stage of cfg.stages that the store lacks (in order); returns {stage: rows computed}."""
    check_config(cfg)
    store = study.StudyStore(store_path)
    runner = StudyRunner(cfg, device=device, progress=progress)
    done = {}
    for stage in study.STAGES:
        if stage not in cfg.stages:
            continue
        configs, seeds = stage_configs(cfg, store, stage)
        done[stage] = study.run_missing(store, runner.run_config(stage), stage=stage, configs=configs,
                                        train_seeds=seeds, evaluation=stage_evaluation(cfg, stage),
                                        progress=progress)
    return done


@dataclass(frozen=True)
class StudyJob:
    """One dispatched job of a stage: its runs in plan order (study.PlannedRun), the evaluation their keys hold, and
    the shard its rows go to."""

    cfg: StudyConfig
    stage: str
    evaluation: dict
    runs: tuple
    shard: str
    threads: int = 0


def run_study_job(job: StudyJob) -> int:
    """A dispatched job, in its worker: train and evaluate its runs in order, appending one row each to its shard
    (as run_study appends to the store); returns how many it ran. Refuses to run other code than its parent's."""
    dispatch.set_threads(job.threads)
    if stage_evaluation(job.cfg, job.stage) != job.evaluation:
        raise RuntimeError(f"this worker's code or settings give another evaluation than the parent's for stage "
                           f"{job.stage!r} (numerics {numerics_fingerprint()} vs {job.evaluation.get('numerics')}): "
                           "run the jobs with the parent's code")
    shard = study.StudyStore(job.shard, lock=False)
    held = {r["key"] for r in shard.rows()}  # a requeued task (preempted, node failure) resumes after its last row
    runs = [run for run in job.runs if run[0] not in held]
    if not runs:
        return 0
    runner = StudyRunner(job.cfg, device=select_device(job.cfg.device), progress=False)
    return study.run_planned(shard, runner.run_config(job.stage), runs, stage=job.stage, evaluation=job.evaluation)


def job_seconds(cfg: StudyConfig, options: DispatchConfig, calibration: StudyCalibration, *,
                store_path: str | Path = STORE_PATH) -> list[float]:
    """Estimated seconds of each job dispatch_study would submit for cfg's stages (estimate_plan's seconds of its
    runs, later stages at the provisional selection, plus the margin offset a job measures), in submission order."""
    plan = plan_study(cfg, calibration=calibration, store_path=store_path)
    setup = plan.attrs.get("setup_seconds", 0.0)
    out = []
    for stage in dict.fromkeys(plan.stage):
        todo = plan[(plan.stage == stage) & ~plan.stored].seconds.tolist()
        out += [setup + sum(chunk) for chunk in dispatch.split_work(todo, options)]
    return out


def load_calibration(source: str, cfg: StudyConfig, *, store_path: str | Path = STORE_PATH) -> StudyCalibration:
    """A calibration from a JSON file (--plan --save_calibration), or "here": measured now on cfg.device for the
    engine methods the study's runs still train (calibrate_study)."""
    if source != "here":
        return StudyCalibration(**json.loads(Path(source).read_text()))
    plan = planned_runs(cfg, store_path=store_path)
    engines = sorted(set(plan.engine[plan.trains & ~plan.stored]))
    return calibrate_study(cfg, device=select_device(cfg.device), engines=engines)


def dispatch_study(cfg: StudyConfig, options: DispatchConfig, *, store_path: str | Path = STORE_PATH,
                   progress: bool = True, merge_only: bool = False,
                   calibration: StudyCalibration | None = None) -> dict[str, dict[str, int]]:
    """run_study through jobs (nbhelpers.dispatch), stage by stage in order: the stage's runs that neither the store
    nor a shard holds, split into jobs by options, run, then every shard row of the stage merged into the store in
    plan order (the store ends as a single-process run's). Returns {stage: {"computed", "merged", "pending" (rows
    left in shards), "missing" (runs the store still lacks)}}.

    merge_only: compute nothing, only merge what the shards hold (stops at a stage that is still incomplete).
    A failed job raises dispatch.DispatchError after the merge; its finished rows wait in its shard for the rerun.
    On Slurm, before anything is submitted: dispatch.check_slurm (partition, time limit, GPUs, folders) and, with a
    calibration, every job's estimated time against options.job_minutes (job_seconds).
    """
    check_config(cfg)
    if options.dispatch == "slurm" and not merge_only:
        dispatch.check_slurm(options, store_path)
        if calibration is not None:
            dispatch.check_job_seconds(options, job_seconds(cfg, options, calibration, store_path=store_path),
                                       estimate=f"calibration on {calibration.device}")
    store = study.StudyStore(store_path)
    out: dict[str, dict[str, int]] = {}
    for stage in study.STAGES:
        if stage not in cfg.stages:
            continue
        configs, seeds = stage_configs(cfg, store, stage)
        evaluation = stage_evaluation(cfg, stage)
        plan = dict(stage=stage, configs=configs, train_seeds=seeds, evaluation=evaluation)
        todo = study.plan_missing(store, **plan)
        held = {r["key"] for f in dispatch.shard_files(store_path) for r in study.StudyStore(f, lock=False).rows()}
        chunks = dispatch.split_work([] if merge_only else [run for run in todo if run[0] not in held], options)
        shards = dispatch.new_shards(store_path, len(chunks), tag=stage)
        jobs = [StudyJob(cfg, stage, evaluation, tuple(chunk), str(shard), options.threads)
                for chunk, shard in zip(chunks, shards)]
        outcomes = (dispatch.run_jobs(run_study_job, jobs, [s.stem for s in shards], options, name=f"study-{stage}",
                                      folder=dispatch.job_folder(store_path, options), progress=progress)
                    if jobs else [])
        keys = [run[0] for run in todo]
        merged = dispatch.merge_shards(store, position=dispatch.keyed_positions(keys, store), n=len(keys))
        missing = len(study.plan_missing(store, **plan))
        out[stage] = {"computed": sum(int(o.result) for o in outcomes if o.ok), "merged": merged["merged"],
                      "pending": merged["pending"], "missing": missing}
        dispatch.check_outcomes(outcomes, what=f"study stage {stage!r}")
        if missing and merge_only:
            break  # the later stages need this one
        if missing:
            raise dispatch.DispatchError(f"study stage {stage!r}: {missing} runs are still missing after its jobs")
    return out


def build_parser() -> argparse.ArgumentParser:
    """The study CLI's parser: StudyConfig's fields (but rerun), the store's upkeep, --plan and DispatchConfig's."""
    ap = cli_parser("run (or resume) the study of notebook 06 into results/06_study.jsonl",
                    prog="python -m nbhelpers.study_runs",
                    usage="%(prog)s [--FIELD VALUE ...] [--plan | --status | --prune | --merge] (--help lists them)")
    add_arguments(ap, StudyConfig, skip=("rerun",))
    ap.add_argument("--store", default=str(STORE_PATH), help="the study's JSON-lines store")
    ap.add_argument("--status", action="store_true", help="print the store's status for this config, compute nothing")
    ap.add_argument("--prune", action="store_true",
                    help="drop the rows that are not current for this config (other numerics or settings), nothing else")
    ap.add_argument("--carry_over", default="", metavar="OLD_NUMERICS",
                    help="re-key rows of numerics fingerprint OLD_NUMERICS to this code's (only after a change that "
                         "moved no number: tests/test_numerics.py passes against its recorded outputs)")
    ap.add_argument("--plan", action="store_true",
                    help="print every run the study would make and its device time estimated from a calibration "
                         "measured here on --device (a few training steps and evaluation batches); trains and writes "
                         "nothing")
    ap.add_argument("--plan_steps", type=int, default=2, help="--plan: timed training steps per engine method")
    ap.add_argument("--plan_aa_fraction", type=float, default=1.0,
                    help="--plan: share of images AutoAttack attacks (1: its upper bound; it skips misclassified ones)")
    ap.add_argument("--save_calibration", default="", metavar="FILE",
                    help="--plan: also write the calibration to FILE (JSON), for --calibration")
    ap.add_argument("--calibration", default="", metavar="FILE|here",
                    help="--dispatch slurm: refuse, before submitting, jobs estimated to run longer than --job_minutes, "
                         "by the calibration in FILE (--plan --save_calibration FILE, best run on a compute node) or "
                         "'here' (measured now on --device); empty: the job time is not checked")
    add_arguments(ap.add_argument_group("dispatch (nbhelpers.dispatch: jobs through submitit)"), DispatchConfig)
    ap.add_argument("--merge", action="store_true",
                    help="merge the rows that dispatched jobs left in <store>.shards into the store, compute nothing")
    return ap


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m nbhelpers.study_runs [--stages validation test] [--train_seeds 0 1 2] ... (StudyConfig's fields),
    [--dispatch local --workers 2 | --dispatch slurm --slurm_partition gpu ...] (DispatchConfig's), [--merge];
    --plan prints the runs and their estimated device time instead (plan_study); --status, --prune, --carry_over."""
    ap = build_parser()
    args = vars(ap.parse_args(argv))
    store, status, prune, old = args.pop("store"), args.pop("status"), args.pop("prune"), args.pop("carry_over")
    plan, plan_steps, aa_fraction = args.pop("plan"), args.pop("plan_steps"), args.pop("plan_aa_fraction")
    merge, jobs = args.pop("merge"), {name: args.pop(name) for name in DispatchConfig.field_names()}
    save_calibration, calibration = args.pop("save_calibration"), args.pop("calibration")
    cfg = config_or_exit(ap, StudyConfig, {**args, "rerun": True})  # an unknown profile or method first
    options = config_or_exit(ap, DispatchConfig, jobs)
    if calibration and options.dispatch != "slurm":
        ap.error(f"--calibration is for --dispatch slurm (the jobs' time limit), not {options.dispatch!r}")
    if plan:
        table = plan_study(cfg, device=select_device(cfg.device), store_path=store, train_steps=plan_steps,
                           aa_fraction=aa_fraction, log=lambda line: print(line, file=sys.stderr, flush=True))
        print(format_plan(table, profile=cfg.profile))
        if save_calibration:
            with atomic_path(Path(save_calibration)) as tmp:
                tmp.write_text(json.dumps(table.attrs["calibration"], indent=1) + "\n")
        return 0
    committed = {Path(p).resolve() for p in (STORE_PATH, paths.STUDY_REPLICA_STORE)}
    if cfg.profile != "mini" and Path(store).resolve() in committed and (prune or old or not status):
        raise SystemExit(f"--store {store} holds the mini profile's study: give the paper study its own store, e.g. "
                         "--store results/06_study_paper.jsonl")
    if old:
        print(json.dumps({"carried_over": carry_over(old, store_path=store), "store": store,
                          "numerics": numerics_fingerprint()}))
        return 0
    if status or prune:
        dropped = prune_store(cfg, store_path=store) if prune else 0
        print(store_status(cfg, store_path=store).to_string(index=False))
        print(json.dumps({"pruned": dropped, "store": store, **dispatch.shard_status(study.StudyStore(store))}))
        return 0
    if cfg.profile == "paper":  # every dataset the study reads, checked before any work
        notebook.check_paper_data(cfg)
    if merge or options.dispatch != "none":
        cal = None
        if options.dispatch == "slurm" and not merge:
            dispatch.check_slurm(options, store)  # before a calibration takes its time
            if calibration:
                cal = load_calibration(calibration, cfg, store_path=store)
            else:
                print("job time not checked against --job_minutes: pass --calibration FILE or --calibration here")
        try:
            done = dispatch_study(cfg, options, store_path=store, merge_only=merge, calibration=cal)
        except dispatch.DispatchError as err:
            print(err)
            return 1
    else:
        done = run_study(cfg, store_path=store, device=select_device(cfg.device))
    if (Path(store).resolve() == Path(STORE_PATH).resolve() and "validation" in cfg.stages
            and (not merge or not done.get("validation", {}).get("missing", 1))):
        write_selection(cfg, store_path=store)  # the training CLI's defaults follow the committed selection
    print(json.dumps({"computed": done, "store": store}))
    return 0



def store_status(cfg: StudyConfig, *, store_path: str | Path = STORE_PATH) -> pd.DataFrame:
    """Per stage: rows expected for this config, rows stored for this code and evaluation ('current'), and rows
    stored by other code or other settings ('other', never used here)."""
    store = study.StudyStore(store_path)
    table = []
    for stage in study.STAGES:
        current = current_rows(store, cfg, stage)
        try:
            configs, seeds = stage_configs(cfg, store, stage)
            expected = len(seeds) * sum(len(v) for v in configs.values())
        except RuntimeError:  # the later stages need the selection first
            expected = None
        table.append({"stage": stage, "expected": expected, "current": len(current),
                      "other": len(store.rows(stage=stage)) - len(current),
                      "compute minutes (current rows)": round(sum(r.get("seconds", 0) for r in current) / 60, 1)})
    return pd.DataFrame(table)


def prune_store(cfg: StudyConfig, *, store_path: str | Path = STORE_PATH) -> int:
    """Drop the store's rows that no stage of cfg would use ('other' in store_status); returns how many."""
    specs = {stage: stage_evaluation(cfg, stage) for stage in study.STAGES}
    return study.StudyStore(store_path).prune(lambda r: r.get("evaluation") == specs.get(str(r.get("stage"))))


def carry_over(old_numerics: str, *, store_path: str | Path = STORE_PATH) -> int:
    """Re-key the store's rows computed under numerics fingerprint `old_numerics` to this code's (atomic rewrite);
    returns how many. Only for a change that moved no number (a method moved to another module, a module added to
    the fingerprint): tests/test_numerics.py must pass unchanged against its recorded outputs first."""
    store = study.StudyStore(store_path)
    rows = store.rows()
    now = numerics_fingerprint()
    moved = 0
    for row in rows:
        if row["evaluation"].get("numerics") == old_numerics and old_numerics != now:
            row["evaluation"] = {**row["evaluation"], "numerics": now}
            row["key"] = study.row_key(stage=row["stage"], method=row["method"], overrides=row["overrides"],
                                       train_seed=row["train_seed"], evaluation=row["evaluation"])
            moved += 1
    if moved:
        store.rewrite(rows)  # atomic: temporary file and rename
    return moved


def selected_configurations(cfg: StudyConfig | None = None, *,
                            store_path: str | Path = STORE_PATH) -> dict[str, dict[str, object]]:
    """{study method: overrides} selected by the declared rule from the store's validation rows of this code (the
    default StudyConfig's unless cfg is given); an error naming `make study` if they are missing."""
    cfg = cfg or StudyConfig()
    rows = current_rows(study.StudyStore(store_path), cfg, "validation")
    missing = [m for m in study.study_methods() if not any(r["method"] == m for r in rows)]
    if missing:
        raise FileNotFoundError(f"{store_path} has no validation rows of {missing} for this code: run `make study` "
                                "(or notebook 06 with rerun=True), or pass use_selected=False")
    return study.select(rows, rule=selection_rule(cfg))


def write_selection(cfg: StudyConfig | None = None, *, store_path: str | Path = STORE_PATH,
                    out: str | Path = paths.STUDY_SELECTION) -> dict[str, object]:
    """Write 06's selection (selected_configurations) to `out` atomically, with the rule and the numerics it was
    selected under: the training CLI's defaults (it reads the file, never the study). Returns what was written."""
    cfg = cfg or StudyConfig()
    payload = {"profile": cfg.profile, "rule": selection_rule(cfg).describe(), "numerics": numerics_fingerprint(),
               "store": Path(store_path).name, "selected": selected_configurations(cfg, store_path=store_path)}
    with atomic_path(Path(out)) as tmp:
        tmp.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return payload


def _stage_rows(cfg: StudyConfig, path: str | Path | None) -> dict[str, list[dict]]:
    """{stage: current rows} of the test, strong and ablation stages of a store ({} if path is None or absent)."""
    if path is None or not Path(path).is_file():
        return {}
    store = study.StudyStore(path)
    return {stage: current_rows(store, cfg, stage) for stage in ("test", "strong", "ablation")}


def _verdict_inputs(cfg: StudyConfig, store_path: str | Path, replica_path: str | Path | None) -> dict[str, object]:
    """The keyword arguments of study.study_verdicts / findings_study: a store's current rows by stage, the replica's
    where it has test rows of this code, and cfg's radii and tolerance."""
    rows = _stage_rows(cfg, store_path)
    if not rows.get("test"):
        raise FileNotFoundError(f"{store_path} has no test-stage rows for this code: run `make study`")
    replica = _stage_rows(cfg, replica_path)
    return dict(test_rows=rows["test"], ablation_rows=rows["ablation"], strong_rows=rows["strong"],
                replica=replica if replica.get("test") else None, eps_small=min(cfg.test_eps_list),
                eps_large=cfg.select_eps, clean_tolerance=cfg.clean_tolerance)


def store_verdicts(cfg: StudyConfig, *, store_path: str | Path = STORE_PATH,
                   replica_path: str | Path | None = paths.STUDY_REPLICA_STORE) -> pd.DataFrame:
    """study.study_verdicts of a store's current rows, pooled with the replica's where it has rows of this code
    (replica_path None: the store alone): one row per finding and scope (pooled, study, replica)."""
    return study.study_verdicts(**_verdict_inputs(cfg, store_path, replica_path))


def store_findings(cfg: StudyConfig, *, store_path: str | Path = STORE_PATH,
                   replica_path: str | Path | None = paths.STUDY_REPLICA_STORE) -> list[study.Finding]:
    """Notebook 06's verdicts (study.findings_study, docs/VERDICT_RULES.md) from a store's current rows, pooled with
    the replica store's where it has rows of this code: the test stage at the smallest test eps and at select_eps,
    with the ablation and strong stages where the stores have them."""
    return study.findings_study(**_verdict_inputs(cfg, store_path, replica_path))


def compare_replication(cfg: StudyConfig, *, store_path: str | Path = STORE_PATH,
                        replica_path: str | Path = paths.STUDY_REPLICA_STORE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The study against its end-to-end rerun elsewhere (same code, same keys): (selected configuration per method
    in each, "not run there" for a method the replica lacks; per finding the verdict with estimate [interval at its
    Holm level] in each store alone and pooled over both, and whether the two stores' verdicts agree). The pooled
    column is the decisive one."""
    ours = selected_configurations(cfg, store_path=store_path)
    rows = current_rows(study.StudyStore(replica_path), cfg, "validation")
    if not rows:
        raise FileNotFoundError(f"{replica_path} has no validation rows for this code: rerun the study there")
    theirs = study.select(rows, rule=selection_rule(cfg))  # a replica made before a method existed lacks it
    selection = pd.DataFrame({m: {"study": study.config_id(ours[m]),
                                  "replica": study.config_id(theirs[m]) if m in theirs else "not run there",
                                  "same": ours[m] == theirs[m] if m in theirs else None} for m in study.study_methods()}).T
    table = store_verdicts(cfg, store_path=store_path, replica_path=replica_path)
    lines = []
    for fid in dict.fromkeys(table.finding):
        line = {"finding": fid}
        got = {r.scope: r for r in table[table.finding == fid].itertuples()}
        for name in ("study", "replica", "pooled"):
            r = got.get(name)
            line[name] = (f"{r.verdict}: {format_interval(r.estimate, r.low, r.high, signed=True)} "
                          f"({100 * r.level:.1f}%)" if r is not None else "not in the store")
        line["same verdict"] = ("study" in got and "replica" in got
                                and got["study"].verdict == got["replica"].verdict)
        lines.append(line)
    return selection, pd.DataFrame(lines).set_index("finding")


def verdict_table(table: pd.DataFrame) -> pd.DataFrame:
    """study.study_verdicts (or store_verdicts) for reading, in accuracy points: per finding and scope the
    comparison, runs, the estimate with its 95% interval, the interval at the claim's Holm level, p and Holm p, the
    two parts of the standard error, and the verdict; the decisive scope first."""
    out = []
    for r in table.sort_values(["finding", "decisive"], ascending=[True, False], kind="stable").itertuples():
        out.append({"finding": r.finding, "scope": r.scope + (" (decides)" if r.decisive else ""),
                    "a - b": f"{r.a} - {r.b}", "score": r.metric, "runs": r.runs,
                    "estimate [95%]": format_interval(r.estimate, r.low95, r.high95, signed=True),
                    "Holm level": f"{100 * r.level:.2f}%",
                    "interval at Holm level": format_interval(r.estimate, r.low, r.high, signed=True),
                    "p": f"{r.p:.3g}", "Holm p": f"{r.p_holm:.3g}",
                    "SE seeds / images": f"{100 * r.seed_se:.2f} / {100 * r.image_se:.2f}",
                    "verdict": r.verdict})
    order = list(dict.fromkeys(table.finding))
    frame = pd.DataFrame(out)
    frame["_o"] = frame.finding.map(order.index)
    return frame.sort_values("_o", kind="stable").drop(columns="_o").set_index(["finding", "scope"])


def format_interval(mean: float, low: float, high: float, *, scale: float = 100.0, signed: bool = False) -> str:
    """'62.1 [60.3, 63.9]' (accuracy points by default; 'n/a' ends for fewer than 2 seeds)."""
    f = "{:+.1f}" if signed else "{:.1f}"
    e, lo, hi = (f.format(scale * v) if v == v else "n/a" for v in (mean, low, high))
    return f"{e} [{lo}, {hi}]"


def seed_table(rows: list[dict]) -> pd.DataFrame:
    """Methods x scores (mean over tasks only): 'mean [95% t-interval]' over train seeds, in accuracy points."""
    summary = study.seed_summary(rows)
    summary = summary[~summary.metric.str.contains("/")]
    summary = summary.assign(cell=[format_interval(m, lo, hi) for m, lo, hi in
                                   zip(summary["mean"], summary.ci_low, summary.ci_high)])
    return summary.pivot_table(index="method", columns="metric", values="cell", aggfunc="first", sort=False)


def describe_config(cfg, names: list[str] | None = None) -> str:
    """cfg's repr as a reader should read it: each knob the run replaces says so (04/05 taking 06's selection: which
    of the compared models `names` take it from the selection, each one's value being in the models' table; 06: the
    knobs its search grids set per configuration)."""
    replaced: dict[str, list[str]] = {}
    if isinstance(cfg, StudyConfig):
        space = study.search_space(profile=cfg.profile, finetune_steps=cfg.finetune_steps)
        replaced = {k: [] for grid in space.values() for config in grid for k in config}
    elif hasattr(cfg, "uses_selection") and cfg.uses_selection():
        selected = selected_configurations()
        for name in names or []:
            if methods.get(name).selection:
                for k in methods.selected_overrides(name, selected):
                    replaced.setdefault(k, []).append(name)
    parts = []
    for k, v in cfg.to_dict().items():
        if k not in replaced:
            parts.append(f"{k}={v!r}")
        elif isinstance(cfg, StudyConfig):
            parts.append(f"{k}={v!r} (searched per method)")
        else:
            parts.append(f"{k}={v!r} (06's selection replaces it for {', '.join(replaced[k])})")
    return f"{type(cfg).__name__}(\n    " + ",\n    ".join(parts) + ")"


def prepare_models(cfg, names: list[str], *, base, preprocess=None, device: torch.device | str = "cpu",
                   margin_offset: dict | None = None, progress: bool = True) -> tuple[dict[str, EvalModel], dict]:
    """04/05's compared models: each named method built by suite.build_eval_model, at the configuration 06 selected
    for it (methods.Method.selection) when cfg.uses_selection(), else at cfg's knobs; then cfg's released
    checkpoints, named suite.released_name(label).

    margin_offset: suite.margin_offset_for's result if already measured (else measured here when a model needs it).
    Every model is tagged with its configuration (column 'model_config' of its rows: the overrides' canonical JSON,
    'knobs' when the notebook's knobs were used, 'released' for released checkpoints). Returns ({name: EvalModel},
    {"margin_offset", "iat_path", "configs": {name: config}}).
    """
    suite.check_names(names)
    selected = selected_configurations() if cfg.uses_selection() else None
    records = [methods.get(n) for n in names]
    if margin_offset is None and any(m.needs_offset for m in records):
        margin_offset = suite.margin_offset_for(cfg, base, preprocess=preprocess, device=device)
    models: dict[str, EvalModel] = {}
    info: dict[str, object] = {"margin_offset": margin_offset, "iat_path": None, "configs": {}}
    for method in records:
        over = methods.selected_overrides(method.name, selected) if selected is not None else {}
        run_cfg = cfg.replace(**over)
        iat_path = (suite.iat_projection_for(run_cfg, base, preprocess=preprocess, device=device, progress=progress)
                    if method.needs_iat else "")
        models[method.name] = suite.build_eval_model(
            method.name, run_cfg, base, margin_offset=margin_offset["offset_cosine"] if method.needs_offset else 0.0,
            iat_path=iat_path, device=device, progress=progress)
        config = study.config_id(over) if over else "knobs"
        models[method.name].tags["model_config"] = config
        info["configs"][method.name] = config
        info["iat_path"] = iat_path or info["iat_path"]
    models.update(suite.released_models(cfg, device=device))
    return models, info


def ablation_table(rows: list[dict], *, metric: str) -> pd.DataFrame:
    """Per ablation variant and reference: what it is, 'mean [95% t-interval]' of clean and `metric` over seeds,
    and the paired per-seed difference at `metric` against TeCoA and against TAI (accuracy points)."""
    table = seed_table(rows)[["clean", metric]]
    table.insert(0, "variant", [study.ABLATIONS[m].description if m in study.ABLATIONS
                                else f"reference: {m} at its selected configuration" for m in table.index])
    for ref in ("tecoa", "tai"):
        cells = []
        for m in table.index:
            if m == ref:
                cells.append("")
                continue
            d = study.paired_seed_differences(rows, m, ref)
            d = d[d.metric == metric].iloc[0]
            cells.append(format_interval(d.mean_diff, d.ci_low, d.ci_high, signed=True))
        table[f"minus {ref} at {metric}"] = cells
    return table


# ------------------------------------------------------------------------------------ planning (--plan), before training
#
# Every run the study would make, and an estimate of its device time from a calibration measured on the machine at
# hand: a few training steps of each engine and a few evaluation batches of the configured model at the configured
# sizes, then extrapolated. Nothing is written (no store, no cache) and no model is trained beyond those steps.

AA_GRADIENT_STEPS = 100 + 9 * 100
"""Gradient steps per image of AutoAttack's APGD-CE (100) and APGD-T (100 for each of 9 targets): an upper bound,
as torchattacks attacks only the images still classified correctly."""


@dataclasses.dataclass(frozen=True)
class StudyCalibration:
    """Seconds measured on one device for the configured model and sizes (see :func:`calibrate_study`)."""

    device: str
    model: str
    image_size: int
    train_batch_size: int
    batch_size: int
    train_step_seconds: dict[str, float]
    """Per engine method: one training step of the global batch (attack, objective, update; batch loading included
    when train_data is "disk")."""
    train_data: str
    """"disk" or "memory" (the fine-tuning set's own batches), "synthetic" (random images: the set is not there)."""
    n_classes: int
    """Classes of the fine-tuning set (their text embeddings are random here: they do not change a step's cost)."""
    iat_step_seconds: float
    """One Adam step of IAT text tuning over n_classes prompts (nan: not measured)."""
    forward_seconds: float
    """Per image: the zero-shot head's forward pass (clean accuracy), at batch_size."""
    gradient_seconds: float
    """Per image: one attack step (forward and input gradient), at batch_size."""
    load_seconds: float
    """Per evaluated image: reading and preprocessing it (nan: no evaluation dataset was there to read)."""
    open_seconds: float
    """Per evaluated dataset and run: opening it (torchvision's dataset object, class names; nan as load_seconds)."""
    load_dataset: str
    """The dataset load_seconds was measured on ("" if none)."""
    seconds: float
    """How long the calibration took."""
    weights: str = ""
    """How the timed model was made (models.timing_model: random weights of the architecture on paper)."""


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work (timing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step_seconds(cfg: StudyConfig, engine_method: str, base: models.ClipModel, emb: torch.Tensor,
                        batches: list[tuple[torch.Tensor, torch.Tensor]] | None, train: training.TrainData | None, *,
                        device: torch.device, steps: int, warmup: int) -> float:
    """Seconds per training step of an engine method: training.finetune's set-up (student copy, teacher, optimizer)
    without its checkpoints, then warmup + steps calls of training.train_step, the last steps timed."""
    ft_cfg = cfg.finetune_config(engine_method)
    method = methods.get(engine_method)
    student = copy.deepcopy(base).eval()
    tower = [p for name, p in student.named_parameters() if name.startswith("clip.visual.")]
    trained = {id(p) for p in (tower[-ft_cfg.partial_last_n:] if method.trainable == "last_n" else tower)}
    for p in student.parameters():
        p.requires_grad_(id(p) in trained)
    teacher = build_head(base, emb, device=device) if method.needs_teacher else None
    head = training.make_linear_head(ft_cfg, emb) if method.head == "linear" else None
    params = [p for p in student.parameters() if p.requires_grad] + (list(head.parameters()) if head else [])
    opt = torch.optim.SGD(params, lr=ft_cfg.finetune_lr, momentum=ft_cfg.momentum)
    engine = training.make_engine(ft_cfg, student, emb, opt, teacher=teacher, scale=base.logit_scale(),
                                  device=device, head=head)
    seconds = 0.0
    for step in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        x, y = train.batch(step, cfg.train_batch_size) if train is not None else batches[step % len(batches)]
        noise = (training.train_start_noise(ft_cfg.train_seed, step, torch.arange(len(x)), x.shape[1:], device=device)
                 if ft_cfg.start_scheme() == "counter" else 2 * torch.rand(x.shape) - 1)
        training.train_step(engine, step, x.to(device), y.to(device), noise.to(device))
        _sync(device)
        if step >= warmup:
            seconds += time.perf_counter() - t0
    return seconds / steps


def _engine_methods() -> list[str]:
    """The engine methods the study's runs train with (its methods and the ablation variants)."""
    names = [*study.study_methods(), *study.ABLATIONS]
    return list(dict.fromkeys(methods.get(study.trained_as(n)).engine for n in names))


def _probe_seconds(base: models.ClipModel, size: int, *, device: torch.device, n: int = 2) -> float:
    """Seconds per image of one forward pass and input gradient of the image tower on n random images (after one
    untimed pass): the unit of the calibration's up-front estimate."""
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    seconds = 0.0
    for timed in (False, True):
        _sync(device)
        t0 = time.perf_counter()
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(base.encode_image(xg).float().pow(2).sum(), xg)
        _sync(device)
        seconds = (time.perf_counter() - t0) / n if timed else 0.0
    return seconds


def calibration_estimate(cfg: StudyConfig, probe_seconds: float, *, n_engines: int, train_steps: int, warmup: int,
                         attack_steps: int) -> float:
    """Rough seconds a calibration will take from the probe's seconds per image (forward + input gradient): each
    engine's warmup + train_steps steps of train_pgd_steps attack steps and about two more passes per image, the
    evaluation timing (a clean pass counted a third, attack_steps gradient steps), and the IAT steps' image pass."""
    per_step = cfg.train_batch_size * (cfg.train_pgd_steps + 2) * probe_seconds
    evaluation = cfg.batch_size * probe_seconds * (1 + attack_steps)  # three clean passes ~ one with its gradient
    return n_engines * (warmup + train_steps) * per_step + evaluation + 2 * probe_seconds


def calibrate_study(cfg: StudyConfig, *, device: torch.device | str = "cpu", train_steps: int = 2, warmup: int = 1,
                    attack_steps: int = 2, engines: list[str] | None = None,
                    log: Callable[[str], None] | None = None) -> StudyCalibration:
    """Measure on `device`, for cfg's model and sizes: seconds per training step of each engine method (default: all
    the study trains with), per IAT step, per image for a forward pass and for one attack step at cfg.batch_size,
    and per evaluated image for reading it. Training batches come from the fine-tuning set when it is there (its
    loading is then timed too), else random images at the model's input size; class embeddings are random unit
    vectors (C, D). The model needs no weights file (models.timing_model: on paper, random weights of the same
    architecture and activation, which time the same). log: called with a line at every stage (what is timed, how
    long it took) and, on a CPU, first with the estimated duration of the whole calibration. Writes nothing, trains
    nothing beyond warmup + train_steps steps per engine."""
    check_config(cfg)
    if train_steps < 1 or attack_steps < 1 or warmup < 0:
        raise ValueError(f"need train_steps >= 1, attack_steps >= 1, warmup >= 0; got {train_steps}, "
                         f"{attack_steps}, {warmup}")
    say = log if log is not None else (lambda line: None)
    device = torch.device(device)
    t_start = time.perf_counter()
    engines = list(engines) if engines is not None else _engine_methods()
    base, preprocess, weights = models.timing_model(**cfg.model_spec(), device=device)
    size = base.image_size
    say(f"calibrating on {device}: {base.model_name} at {size} px, {weights}")
    if device.type == "cpu":
        probe = _probe_seconds(base, size, device=device)
        guess = calibration_estimate(cfg, probe, n_engines=len(engines), train_steps=train_steps, warmup=warmup,
                                     attack_steps=attack_steps)
        say(f"  on this CPU ({torch.get_num_threads()} threads) a forward pass and input gradient take {probe:.3g} s "
            f"per image: the calibration ({len(engines)} engine methods x {warmup + train_steps} steps of "
            f"{cfg.train_batch_size} images, then the attack timing) will take roughly {guess / 60:.0f} min "
            "(fewer with --plan_steps 1, --train_batch_size, --batch_size)")
    gen = torch.Generator().manual_seed(0)
    try:
        train: training.TrainData | None = training.TrainData(cfg.finetune_config("tecoa"), preprocess=preprocess)
        n_classes, classnames, templates = len(train.classnames), list(train.classnames), list(train.templates)
        data_kind = "memory" if cfg.profile == "mini" else "disk"
    except FileNotFoundError:  # paper profile without the fine-tuning set: random images of the model's input size
        train, n_classes, data_kind = None, 200, "synthetic"  # TinyImageNet's 200 classes
        classnames, templates = [f"class {i}" for i in range(n_classes)], [paper_data.TEMPLATE]
    batches = None if train is not None else [
        (torch.rand(cfg.train_batch_size, 3, size, size, generator=gen),
         torch.randint(0, n_classes, (cfg.train_batch_size,), generator=gen)) for _ in range(2)]
    with torch.no_grad():
        probe = torch.rand(1, 3, size, size, generator=gen).to(device)
        dim = base.encode_image(probe).shape[-1]
    emb = torch.nn.functional.normalize(torch.randn(n_classes, dim, generator=gen), dim=-1).to(device)
    step_seconds = {}
    for i, e in enumerate(engines, 1):
        t0 = time.perf_counter()
        step_seconds[e] = _train_step_seconds(cfg, e, base, emb, batches, train, device=device, steps=train_steps,
                                              warmup=warmup)
        say(f"  training step {i}/{len(engines)} ({e}, batch {cfg.train_batch_size}, data: {data_kind}): "
            f"{step_seconds[e]:.3g} s ({time.perf_counter() - t0:.0f} s with set-up and warm-up)")
    iat_cfg = cfg.iat_config(iat_steps=train_steps, iat_images=2)
    iat = text_tuning.tune_text(base, iat_cfg, classnames=classnames, templates=templates,
                                images=torch.rand(2, 3, size, size, generator=gen), device=device, progress=False)
    iat_step = iat.seconds / train_steps
    say(f"  IAT step ({n_classes} classes): {iat_step:.3g} s")
    head = build_head(base, emb, device=device)
    x = torch.rand(cfg.batch_size, 3, size, size, generator=gen)
    y = torch.randint(0, n_classes, (cfg.batch_size,), generator=gen)
    kw = dict(batch_size=cfg.batch_size, device=device, fast=cfg.fast_attacks, amp=cfg.amp)
    metrics.predict_logits(head, x, y, eps=0.0, **kw)  # warm-up

    def timed(**attack: object) -> float:
        _sync(device)
        t0 = time.perf_counter()
        metrics.predict_logits(head, x, y, **attack, **kw)
        _sync(device)
        return time.perf_counter() - t0

    clean = timed(eps=0.0)
    attacked = timed(eps=cfg.select_eps / 255, steps=attack_steps)
    forward = clean / cfg.batch_size
    gradient = max(attacked - clean, 0.0) / (attack_steps * cfg.batch_size)
    say(f"  per image at batch {cfg.batch_size}: forward {forward:.3g} s, attack step {gradient:.3g} s")
    load, opening, load_dataset = float("nan"), float("nan"), ""
    for name in dict.fromkeys([*cfg.validation_datasets(), *cfg.test_datasets()]):
        try:
            times, sizes = [], []
            for n in (1, 9):  # opening the dataset, then per image: the difference of two reads
                t0 = time.perf_counter()
                sizes.append(len(data.load_eval_set(cfg.profile, name, n=n, seed=cfg.seed, data_root=cfg.data_root,
                                                    preprocess=preprocess)))
                times.append(time.perf_counter() - t0)
        except FileNotFoundError:
            continue
        load = max(times[1] - times[0], 0.0) / (sizes[1] - 1) if sizes[1] > 1 else times[0]
        opening, load_dataset = max(times[0] - load, 0.0), name
        break
    say(f"  reading: {load:.3g} s per image ({load_dataset or 'no evaluation dataset here'}); calibrated in "
        f"{time.perf_counter() - t_start:.0f} s")
    return StudyCalibration(str(device), base.model_name, size, cfg.train_batch_size, cfg.batch_size, step_seconds,
                            data_kind, n_classes, iat_step, forward, gradient, load, opening, load_dataset,
                            time.perf_counter() - t_start, weights)


def _plan_stage_configs(cfg: StudyConfig, stage: str, space: Mapping[str, list[dict]],
                        selected: Mapping[str, Mapping[str, object]]) -> tuple[dict[str, list[dict]], list[int]]:
    """(configurations per method, train seeds) of a stage given a selection (as stage_configs, without a store)."""
    if stage == "validation":
        return {m: list(v) for m, v in space.items()}, [cfg.train_seeds[0]]
    if stage == "test":
        return {m: [dict(selected[m])] for m in study.study_methods()}, list(cfg.train_seeds)
    if stage == "strong":
        return {m: [dict(selected[m])] for m in cfg.strong_methods}, list(cfg.strong_seeds)
    return study.ablation_configs(selected), list(cfg.train_seeds)


def _provisional_label(name: str) -> str:
    """How a later stage's configuration reads before the validation stage has selected it."""
    if name not in study.ABLATIONS:
        return "selected"
    ab = study.ABLATIONS[name]
    sc = " and TIMA's selected sc_weight" if ab.keeps_sc else ""
    return f"{ab.parent}'s selected + {study.config_id(dict(ab.overrides))}{sc}"


def planned_runs(cfg: StudyConfig, *, store_path: str | Path | None = None) -> pd.DataFrame:
    """Every run of cfg.stages the study would make, in run order (study.run_missing's: seeds outermost), one row each:
    stage, method, config (the overrides' canonical JSON; later stages read "selected" until the store holds the
    validation stage), train_seed, trains (the run trains its image tower: no earlier run of the plan made these
    weights), tunes_text (it tunes an IAT projection), text_sides (2: also scored with the original text), datasets,
    images (per dataset), attacks, finetune_steps, key (the store row's), stored (already in the store: skipped).
    Reads the store (if given) and nothing else; writes nothing."""
    check_config(cfg)
    store = study.StudyStore(store_path) if store_path is not None and Path(store_path).is_file() else None
    space = study.search_space(profile=cfg.profile, finetune_steps=cfg.finetune_steps)
    val = current_rows(store, cfg, "validation") if store is not None else []
    known = all(any(r["method"] == m for r in val) for m in study.study_methods())
    # before the selection, each method's first configuration stands in for it: costs do not depend on which one
    selected = study.select(val, rule=selection_rule(cfg)) if known else {m: space[m][0] for m in space}
    pgd = f"pgd{cfg.pgd_steps}"
    trained: set[tuple] = set()
    tuned: set[tuple] = set()
    rows = []
    for stage in study.STAGES:
        if stage not in cfg.stages:
            continue
        configs, seeds = _plan_stage_configs(cfg, stage, space, selected)
        spec = stage_evaluation(cfg, stage)
        eps = ", ".join(f"{e:g}" for e in spec["eps"])
        attack = f"clean, {pgd} + aa @ {eps}" if spec["attack"] == "pgd+aa" else f"clean, {pgd} @ {eps}"
        for seed in seeds:
            for name, overrides_list in configs.items():
                for overrides in overrides_list:
                    method = methods.get(study.trained_as(name))
                    _, iat_over = split_overrides(overrides)
                    weights = (method.name, study.config_id(overrides), seed)
                    text = (study.config_id(iat_over), seed)
                    key = study.row_key(stage=stage, method=name, overrides=overrides, train_seed=seed,
                                        evaluation=spec)
                    rows.append({
                        "stage": stage, "method": name,
                        "config": (study.config_id(overrides) if stage == "validation" or known
                                   else _provisional_label(name)),
                        "train_seed": seed, "trains": weights not in trained,
                        "tunes_text": method.needs_iat and text not in tuned and weights not in trained,
                        "text_sides": 2 if method.needs_iat else 1, "engine": method.engine,
                        "datasets": ", ".join(spec["tasks"]), "n_datasets": len(spec["tasks"]),
                        "images": int(spec["n"]), "attacks": attack,
                        "finetune_steps": int(overrides.get("finetune_steps", cfg.finetune_steps)),
                        "key": key, "stored": bool(store is not None and store.has(key))})
                    trained.add(weights)
                    if method.needs_iat:
                        tuned.add(text)
    plan = pd.DataFrame(rows)
    plan.attrs["selection"] = "from the store" if known else "provisional (the validation stage selects)"
    return plan


def _eval_seconds_per_image(cfg: StudyConfig, cal: StudyCalibration, stage: str, *, aa_fraction: float = 1.0) -> float:
    """Estimated seconds to score one image of one dataset with one text side in a stage: a clean forward, PGD
    (pgd_steps gradient steps and a forward) per radius, and in the strong stage AutoAttack's gradient steps on
    aa_fraction of the images (1: its upper bound, AA_GRADIENT_STEPS on every image) and a forward."""
    spec_eps = {"validation": [cfg.select_eps], "test": list(cfg.test_eps_list), "strong": [cfg.strong_eps],
                "ablation": list(cfg.ablation_eps_list)}[stage]
    pgd = cfg.pgd_steps * cal.gradient_seconds + cal.forward_seconds
    out = cal.forward_seconds + len(spec_eps) * pgd
    if stage == "strong":
        out += aa_fraction * AA_GRADIENT_STEPS * cal.gradient_seconds + cal.forward_seconds
    return out


def estimate_plan(plan: pd.DataFrame, cfg: StudyConfig, cal: StudyCalibration, *,
                  aa_fraction: float = 1.0) -> pd.DataFrame:
    """The plan with estimated seconds per run (train_seconds: steps x step time, plus IAT tuning; eval_seconds:
    images x attack cost per text side, plus reading them) and their sum (seconds); a stored run counts 0.
    aa_fraction: the share of images AutoAttack runs its gradient steps on (1: its upper bound)."""
    if not 0 <= aa_fraction <= 1:
        raise ValueError(f"aa_fraction is a fraction in [0, 1], got {aa_fraction}")
    missing = sorted(set(plan.engine[plan.trains & ~plan.stored]) - set(cal.train_step_seconds))
    if missing:
        raise ValueError(f"the calibration has no training step of engine method(s) {missing}: calibrate them")
    out = plan.copy()
    iat = cfg.iat_steps * cal.iat_step_seconds + cfg.iat_images * cal.forward_seconds
    load = 0.0 if cal.load_seconds != cal.load_seconds else cal.load_seconds  # nan: not measured, not counted
    opening = 0.0 if cal.open_seconds != cal.open_seconds else cal.open_seconds
    todo = ~out.stored
    step = out.engine.map(cal.train_step_seconds).fillna(0.0)  # engines of runs that do not train may be absent
    out["train_seconds"] = todo * (out.trains * out.finetune_steps * step + out.tunes_text * iat)
    per_image = out.stage.map(lambda st: _eval_seconds_per_image(cfg, cal, st, aa_fraction=aa_fraction))
    out["eval_seconds"] = todo * out.n_datasets * (out.images * (out.text_sides * per_image + load) + opening)
    out["seconds"] = out.train_seconds + out.eval_seconds
    return out


def plan_study(cfg: StudyConfig, *, device: torch.device | str = "cpu", calibrate: bool = True,
               calibration: StudyCalibration | None = None, store_path: str | Path | None = None,
               train_steps: int = 2, aa_fraction: float = 1.0,
               log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Every run the study of cfg would make (:func:`planned_runs`) with its estimated device seconds from a
    calibration measured on `device` before anything trains (:func:`calibrate_study`, or the one given; calibrate=False:
    the runs only). The calibration is in ``plan.attrs["calibration"]`` (a dict) and the margin offset TAI needs
    (measured once per study run: 256 fine-tuning images, PGD-10 at two radii) in ``plan.attrs["setup_seconds"]``.
    aa_fraction: see :func:`estimate_plan`; log: the calibration's progress lines. Writes nothing."""
    if not 0 <= aa_fraction <= 1 or train_steps < 1:
        raise ValueError(f"need 0 <= aa_fraction <= 1 and train_steps >= 1, got {aa_fraction} and {train_steps}")
    plan = planned_runs(cfg, store_path=store_path)
    if calibration is None and calibrate:
        calibration = calibrate_study(cfg, device=device, train_steps=train_steps, log=log)
    if calibration is None:
        return plan
    plan = estimate_plan(plan, cfg, calibration, aa_fraction=aa_fraction)
    plan.attrs["aa_fraction"] = aa_fraction
    needs_offset = (~plan.stored & plan.engine.map(lambda e: methods.get(e).needs_offset)).any()
    per_image = 2 * (10 * calibration.gradient_seconds + calibration.forward_seconds)
    plan.attrs["setup_seconds"] = float(needs_offset * 256 * per_image)
    plan.attrs["calibration"] = dataclasses.asdict(calibration)
    return plan


def plan_summary(plan: pd.DataFrame) -> pd.DataFrame:
    """Per stage and in total: runs, runs to do, trainings, IAT tunings, images scored (datasets x images x text
    sides) and, if estimated, device hours (training, evaluation, both) of the runs to do."""
    todo = plan[~plan.stored]
    groups = [(stage, todo[todo.stage == stage], plan[plan.stage == stage]) for stage in dict.fromkeys(plan.stage)]
    rows = []
    for stage, part, every in [*groups, ("total", todo, plan)]:
        row = {"stage": stage, "runs": len(every), "to do": len(part), "trainings": int(part.trains.sum()),
               "IAT tunings": int(part.tunes_text.sum()),
               "images scored": int((part.n_datasets * part.images * part.text_sides).sum())}
        if "seconds" in plan:
            row.update({"train hours": part.train_seconds.sum() / 3600, "eval hours": part.eval_seconds.sum() / 3600,
                        "hours": part.seconds.sum() / 3600})
        rows.append(row)
    summary = pd.DataFrame(rows)
    if "seconds" in plan:
        setup = plan.attrs.get("setup_seconds", 0.0) / 3600
        summary.loc[summary.stage == "total", ["eval hours", "hours"]] += setup
    return summary.round(3)


def format_plan(plan: pd.DataFrame, *, profile: str) -> str:
    """The plan for reading: the calibration, every run (estimated minutes if calibrated), the summary per stage."""
    lines = []
    cal = plan.attrs.get("calibration")
    if cal is not None:
        steps = ", ".join(f"{k} {v:.3g} s" for k, v in cal["train_step_seconds"].items())
        weights = f"; {cal['weights']}" if cal.get("weights") else ""
        lines += [f"calibration on {cal['device']} ({cal['model']} at {cal['image_size']} px, measured in "
                  f"{cal['seconds']:.0f} s{weights}):",
                  f"  training step (batch {cal['train_batch_size']}, data: {cal['train_data']}): {steps}",
                  f"  IAT step ({cal['n_classes']} classes): {cal['iat_step_seconds']:.3g} s",
                  f"  per image at batch {cal['batch_size']}: forward {cal['forward_seconds']:.3g} s, attack step "
                  f"{cal['gradient_seconds']:.3g} s, reading {cal['load_seconds']:.3g} s "
                  f"(+ {cal['open_seconds']:.3g} s per dataset and run; on {cal['load_dataset'] or 'no dataset here'})",
                  ""]
    columns = ["stage", "method", "config", "train_seed", "trains", "tunes_text", "text_sides", "images", "attacks",
               "stored"]
    table = plan[columns].copy()
    if "seconds" in plan:
        table["minutes"] = (plan.seconds / 60).round(1)
    lines += [f"profile {profile}: {len(plan)} runs; later stages' configurations: {plan.attrs.get('selection')}",
              "datasets per stage: " + "; ".join(f"{stage}: {d}" for stage, d in
                                                 plan.groupby("stage", sort=False).datasets.first().items()),
              "", table.to_string(index=False), "", plan_summary(plan).to_string(index=False)]
    if "seconds" in plan:
        total = plan_summary(plan).set_index("stage").loc["total", "hours"]
        fraction = plan.attrs.get("aa_fraction", 1.0)
        aa = (f"at its upper bound of {AA_GRADIENT_STEPS} gradient steps per image" if fraction == 1 else
              f"at {AA_GRADIENT_STEPS} gradient steps on {fraction:g} of the images")
        lines.append(f"\nestimated device-hours on {cal['device']}: {total:.2f} (AutoAttack counted {aa}; class-text "
                     "encoding not counted)")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
