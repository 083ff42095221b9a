"""The scoreboard: any checkpoint scored in one command under one declared protocol, into a keyed, resumable store.

``python -m nbhelpers.score --checkpoint FILE --name "TeCoA (released)" --profile paper --data_root ROOT`` loads
the file strictly (:mod:`nbhelpers.checkpoints`: any released format, read safely, checked against the
architecture), then evaluates clean accuracy and every attack of ``--attacks`` (default PGD-100 and AutoAttack's
APGD-CE + APGD-T) at every eps of ``--eps_list`` (default 1/255 and 4/255) on the same ``--n_samples`` images of
every dataset (default the 16 of the papers), through 05's cell runner (:func:`nbhelpers.grid.run_grid`) into the
scoreboard's store (``results/08_scoreboard.jsonl``, keyed as 05's: profile, model, dataset, protocol, sampling,
attack, eps, n_requested, seed). Every row holds the file's sha256 and detected format, the seconds its cell took on
the device, and the numerics versions of the code that computed it. A rerun of the same command reuses every
stored cell (computes nothing); another protocol, eps or subset size adds rows.

Bad input stops before any work, with a message naming the fix: an unknown protocol, attack or dataset (config
validation), a data root without a requested dataset (the data doctor), a file of another architecture or an
unknown format (the loader), a name already on the scoreboard for another sha256.

The tables (:func:`score_table`, :func:`scoreboard`): per model and protocol, accuracy per dataset and averaged over
the datasets with 95% image-bootstrap intervals (images resampled within each dataset), and the PGD-minus-AutoAttack
gap with its paired interval. **The gap rule**: a model is flagged when its average gap (PGD's accuracy minus
AutoAttack's on the same images, averaged over its datasets) exceeds ``gap_flag`` accuracy points (default 3) at
some eps and the gap's 95% paired image-bootstrap interval lies above 0 (so that a few images of a small subset do
not raise it): AutoAttack finds adversarial examples that PGD misses there, the sign of a masked gradient, and the
PGD numbers of that model (and of papers that report only PGD for it) overstate its robustness.
``--plan`` prints the cells and an estimate of the device time (a measured forward-backward pass of the model
times the passes each attack takes at most) and computes nothing; ``--dispatch`` splits the datasets into jobs
(:mod:`nbhelpers.dispatch`), merged into the store in plan order.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nbhelpers import (attacks, checkpoints, data, dispatch, evaluation, fastpath, grid, models, notebook, paths,
                       study_runs, suite, utils, zeroshot)
from nbhelpers.config import (DispatchConfig, ScoreboardConfig, ScoreConfig, ScoreKnobs, add_arguments, cli_parser,
                              config_or_exit)
from nbhelpers.evaluation import EvalModel
from nbhelpers.findings import percentile_interval
from nbhelpers.models import create_model_and_transforms
from nbhelpers.utils import unpack_mask

STORE_PATH = paths.RESULTS_DIR / "08_scoreboard.jsonl"
NUMERICS_MODULES = (evaluation, attacks, fastpath, zeroshot, models, data)  # the code the scores depend on
LEVEL = 0.95
# forward-backward passes per image and eps, at most: PGD-N takes N; APGD-CE 100 iterations, APGD-T 9 target
# classes x 100 (torchattacks' standard settings; images already misclassified are dropped, so this is an upper bound)
ATTACK_PASSES = {"aa": 100 + 9 * 100, "aa_full": 100 + 9 * 100 + 9 * 100 + 5000}


class ScoreError(ValueError):
    """A scoring request that cannot be carried out as given; the message names the fix."""


def numerics() -> str:
    """The numerics versions of the code that computes the scores, as canonical JSON (on every row)."""
    return json.dumps(utils.numerics_versions(*NUMERICS_MODULES), sort_keys=True)


def plan_cells(cfg: ScoreKnobs, names: Sequence[str]) -> list[tuple]:
    """Every (dataset, model, attack, eps, n) cell of the scoreboard's protocol for the named models, in run order:
    clean, then every attack at every eps, all on the same first n_samples images of each dataset."""
    return evaluation.plan_cells(datasets=cfg.eval_datasets(), models=list(names), attacks=list(cfg.attacks),
                                 eps_list=list(cfg.eps_list), n=cfg.n_samples)


def stamp_models(found: Mapping[str, EvalModel]) -> dict[str, EvalModel]:
    """The models with the numerics versions as a tag (a column of their rows)."""
    mark = numerics()
    return {n: dataclasses.replace(m, tags={**m.tags, "numerics": mark}) for n, m in found.items()}


def check_name(store_path: str | Path, name: str, sha256: str) -> None:
    """Refuse a checkpoint name the store already holds for another file (another sha256), before any work."""
    if not Path(store_path).is_file():
        return
    model = suite.released_name(name)
    other = sorted({r.get("checkpoint_sha256", "") for r in grid.load_store(store_path)[0]
                    if r.get("model") == model and r.get("checkpoint_sha256") not in (None, sha256)})
    if other:
        raise ScoreError(f"the name {name!r} is already on the scoreboard ({store_path}) for another file (sha256 "
                         f"{other[0][:16]}..., this file {sha256[:16]}...). Fix: pass another --name (e.g. with the "
                         "release or the eps in it), or score the file that name was given to.")


def load_checkpoint_model(cfg: ScoreConfig, *, device: torch.device | str = "cpu") -> tuple[EvalModel, object]:
    """(the scored model as an EvalModel with its original text side, its preprocess): cfg.checkpoint loaded
    strictly by create_model_and_transforms (any released format, checked against cfg.model's architecture)."""
    model, preprocess = create_model_and_transforms(**cfg.model_spec(), device=device)
    return suite.checkpoint_eval_model(cfg.name, model, cfg.checkpoint, device=device), preprocess


def score_models(found: Mapping[str, EvalModel], cfg: ScoreKnobs, *, preprocess: object | None = None,
                 base_model: str = "", store_path: str | Path = STORE_PATH, device: torch.device | str = "cpu",
                 datasets: Sequence[str] | None = None, shard: str | Path | None = None,
                 progress: bool = True) -> grid.GridRun:
    """Every cell of the scoreboard's protocol for the models, through 05's cell runner into the store (stored
    cells reused by the models' identities; a shard for a dispatched job). datasets: a subset (a job's share)."""
    return grid.run_grid(stamp_models(found), profile=cfg.profile, datasets=list(datasets or cfg.eval_datasets()),
                         eps_list=list(cfg.eps_list), attacks=list(cfg.attacks), n=cfg.n_samples, seed=cfg.seed,
                         batch_size=cfg.batch_size, data_root=cfg.data_root, preprocess=preprocess,
                         sampling=cfg.sampling_rule(), device=device, config={"score": cfg.to_dict()},
                         base_model=base_model, rerun=cfg.rerun, fast=cfg.fast_attacks, amp=cfg.amp, path=store_path,
                         shard=shard, progress=progress)


def score_project_models(cfg: ScoreboardConfig, *, store_path: str | Path = STORE_PATH,
                         device: torch.device | str = "cpu", progress: bool = True) -> grid.GridRun:
    """Notebook 08: the models this project builds (cfg.models, as 05 builds them: study_runs.prepare_models, from
    the training cache) and cfg's released checkpoints, scored into the store."""
    base, preprocess = create_model_and_transforms(**cfg.model_spec(), device=device)
    for label, path in cfg.released_checkpoints().items():
        check_name(store_path, label, utils.file_fingerprint(path))
    found, _ = study_runs.prepare_models(cfg, list(cfg.models), base=base, preprocess=preprocess, device=device,
                                         progress=progress)
    return score_models(found, cfg, preprocess=preprocess, base_model=base.model_name, store_path=store_path,
                        device=device, progress=progress)


# ----------------------------------------------------------------------------------------------- the plan
def measure_pass_seconds(model: EvalModel, *, batch: int = 8, device: torch.device | str = "cpu") -> float:
    """Seconds of one forward-backward pass of the image tower per image (input gradients, as the attacks take
    them), measured on `batch` random images at the model's resolution after one warm-up pass."""
    tower = model.image_model
    x = torch.rand(batch, 3, tower.image_size, tower.image_size, device=device)
    seconds = []
    for _ in range(2):
        xi = x.clone().requires_grad_(True)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        tower.encode_image(xi).float().sum().backward()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
    return seconds[-1] / batch


def estimate_plan(cfg: ScoreKnobs, cells: Sequence[tuple], *, pass_seconds: float,
                  stored: set[tuple] = frozenset()) -> pd.DataFrame:
    """Per attack and eps: cells, cells already stored, images, forward-backward passes at most and the estimated
    device seconds of the cells still to compute (pass_seconds per image and pass; clean: one pass)."""
    rows = []
    for (attack, eps), group in pd.DataFrame(cells, columns=["dataset", "model", "attack", "eps", "n"]).groupby(
            ["attack", "eps"], sort=False):
        spec = evaluation.resolve_attack(attack)
        passes = (1 if attack == "clean" else ATTACK_PASSES[attack] if attack in ATTACK_PASSES
                  else 10 * spec.steps if spec.kind == "autoattack" else spec.steps or 10)
        todo = [c for c in group.itertuples(index=False) if tuple(c) not in stored]
        rows.append({"attack": spec.label, "eps": eps, "cells": len(group), "stored": len(group) - len(todo),
                     "images (at most)": sum(int(c.n) for c in todo), "passes per image (at most)": passes,
                     "device seconds (at most)": round(sum(int(c.n) for c in todo) * passes * pass_seconds, 1)})
    return pd.DataFrame(rows)


def stored_cells(store_path: str | Path, cfg: ScoreKnobs, model: EvalModel) -> set[tuple]:
    """The (dataset, model, attack, eps, n) cells the store already holds for this model under cfg's protocol."""
    if not Path(store_path).is_file():
        return set()
    protocol = cfg.protocol_name() if hasattr(cfg, "protocol_name") else ""
    return {(r["dataset"], r["model"], r["attack"], float(r["eps"]), int(r["n_requested"]))
            for r in grid.load_store(store_path)[0]
            if r.get("image_id") == model.image_id and r.get("protocol") == protocol and r.get("seed") == cfg.seed
            and _rule(r.get("sampling")) == cfg.sampling_rule()}


def _rule(sampling: object) -> str:
    """The subset rule of a row's sampling ("random+partial": "random", read from partial data)."""
    return str(sampling or "").split("+")[0]


# ----------------------------------------------------------------------------------------------- dispatch
@dataclass(frozen=True)
class ScoreJob:
    """One dispatched job of a scoring: its datasets, the store it reads and the shard its rows go to."""

    cfg: ScoreConfig
    datasets: tuple
    store: str
    shard: str
    threads: int = 0


def run_score_job(job: ScoreJob) -> int:
    """A dispatched job, in its worker: load the checkpoint, score its datasets into its shard; returns the cells
    it computed."""
    dispatch.set_threads(job.threads)
    device = utils.select_device(job.cfg.device)
    model, preprocess = load_checkpoint_model(job.cfg, device=device)
    run = score_models({model.name: model}, job.cfg, preprocess=preprocess, store_path=job.store, device=device,
                       datasets=job.datasets, shard=job.shard, progress=False)
    return run.computed


def dispatch_score(cfg: ScoreConfig, options: DispatchConfig, *, store_path: str | Path = STORE_PATH,
                   progress: bool = True) -> dict[str, int]:
    """The scoring's datasets split into jobs (nbhelpers.dispatch), each computing what the store and the shards
    lack into its shard; the shards merged into the store in plan order. Returns {"computed", "merged", ...}."""
    if options.dispatch == "slurm":
        dispatch.check_slurm(options, store_path)
    store = grid.open_store(store_path)
    chunks = dispatch.split_work(cfg.eval_datasets(), options)
    shards = dispatch.new_shards(store_path, len(chunks), tag="score")
    jobs = [ScoreJob(cfg, tuple(chunk), str(store_path), str(shard), options.threads)
            for chunk, shard in zip(chunks, shards)]
    outcomes = dispatch.run_jobs(run_score_job, jobs, [s.stem for s in shards], options, name="score",
                                 folder=dispatch.job_folder(store_path, options), progress=progress)
    name = suite.released_name(cfg.name)
    cells = plan_cells(cfg, [name])
    index = {c: i for i, c in enumerate(cells)}
    same = {"profile": cfg.profile, "seed": cfg.seed, "protocol": cfg.protocol_name()}

    def position(row: Mapping) -> int | None:
        if any(row.get(k) != v for k, v in same.items()) or _rule(row.get("sampling")) != cfg.sampling_rule():
            return None
        return index.get((row.get("dataset"), row.get("model"), row.get("attack"), float(row.get("eps", -1)),
                          int(row.get("n_requested", -1))))

    stored = {position(r) for r in grid.load_store(store_path)[0]} if Path(store_path).is_file() else set()
    merged = dispatch.merge_shards(store, position=position, n=len(cells), replace=True, settled=lambda p: p in stored)
    if merged["replaced"]:
        grid.compact_store(store_path)
    out = {"computed": sum(int(o.result) for o in outcomes if o.ok), **merged}
    dispatch.check_outcomes(outcomes, what="the scoring")
    return out


# ----------------------------------------------------------------------------------------------- tables
def load_scores(store_path: str | Path = STORE_PATH) -> pd.DataFrame:
    """Every cell of the scoreboard's store (the last row of each key), as a table (empty if there is no store)."""
    if not Path(store_path).is_file():
        return pd.DataFrame()
    return pd.DataFrame(grid.load_store(store_path)[0])


def _replicates(correct: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Bootstrap replicates of the accuracy (%) of per-image correctness under resampled indices (B, n)."""
    return correct[index].mean(axis=1) * 100


def score_table(rows: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, level: float = LEVEL) -> pd.DataFrame:
    """Per protocol, model, attack and eps: accuracy (%) per dataset and averaged over the datasets ('average'),
    each with its image-bootstrap interval (images resampled within each dataset, the same resample for every
    attack of a model, so differences are paired); plus the seconds the cells took and n per dataset."""
    out = []
    groups = ["protocol", "sampling", "profile", "model", "seed"]
    for key, sub in rows.groupby(groups, sort=False):
        rng = np.random.default_rng(seed)
        index = {d: rng.integers(0, int(n), size=(n_boot, int(n)))
                 for d, n in sub[sub.attack == "clean"].groupby("dataset", sort=False).n.max().items()}
        for (attack, eps), cells in sub.groupby(["attack", "eps"], sort=False):
            reps = []
            for r in cells.itertuples(index=False):
                correct = unpack_mask(r.correct, r.n).astype(float)
                idx = index.get(r.dataset)
                rep = _replicates(correct, idx) if idx is not None and idx.shape[1] == r.n else None
                lo, hi = percentile_interval(rep, level) if rep is not None else (np.nan, np.nan)
                reps.append(rep)
                out.append({**dict(zip(groups, key)), "label": r.model_label, "attack": attack,
                            "attack_label": r.attack_label, "eps": float(eps), "dataset": r.dataset,
                            "accuracy": r.accuracy * 100, "low": lo, "high": hi, "n": int(r.n),
                            "seconds": float(r.seconds)})
            complete = [x for x in reps if x is not None]
            mean_rep = np.mean(complete, axis=0) if len(complete) == len(reps) and reps else None
            lo, hi = percentile_interval(mean_rep, level) if mean_rep is not None else (np.nan, np.nan)
            out.append({**dict(zip(groups, key)), "label": cells.model_label.iloc[0], "attack": attack,
                        "attack_label": cells.attack_label.iloc[0], "eps": float(eps), "dataset": "average",
                        "accuracy": cells.accuracy.mean() * 100, "low": lo, "high": hi, "n": int(cells.n.sum()),
                        "seconds": float(cells.seconds.sum())})
    return pd.DataFrame(out)


def _strongest(names: Sequence[str], family: str, preferred: str) -> str | None:
    """The preferred attack if run, else the family's member with the most steps (pgdN, aaN), else None."""
    if preferred in names:
        return preferred
    steps = {a: int(a[len(family):]) for a in names if a.startswith(family) and a[len(family):].isdigit()}
    return max(steps, key=steps.get) if steps else None


def gap_table(rows: pd.DataFrame, *, pgd: str = "pgd100", aa: str = "aa", n_boot: int = 1000, seed: int = 0,
              gap_flag: float = 3.0, level: float = LEVEL) -> pd.DataFrame:
    """Per protocol, model and eps: PGD's accuracy minus AutoAttack's (points, the same images), averaged over the
    datasets both ran on, with its paired image-bootstrap interval, the largest dataset's gap and the flag
    (average gap > gap_flag and its interval above 0: the module docstring's rule). Falls back to the pgdN / aaN with the most steps when
    `pgd` / `aa` was not run."""
    out = []
    for key, sub in rows.groupby(["protocol", "sampling", "profile", "model", "seed"], sort=False):
        names = [str(a) for a in sub.attack.unique()]
        attack, auto = _strongest(names, "pgd", pgd), _strongest(names, "aa", aa)
        if attack is None or auto is None:
            continue
        rng = np.random.default_rng(seed)
        for eps in sorted(set(sub[sub.attack == auto].eps)):
            a = sub[(sub.attack == attack) & (sub.eps == eps)].set_index("dataset")
            b = sub[(sub.attack == auto) & (sub.eps == eps)].set_index("dataset")
            common = [d for d in b.index if d in a.index]
            if not common:
                continue
            reps, gaps = [], {}
            for d in common:
                n = int(min(a.loc[d, "n"], b.loc[d, "n"]))
                diff = (unpack_mask(a.loc[d, "correct"], int(a.loc[d, "n"]))[:n].astype(float)
                        - unpack_mask(b.loc[d, "correct"], int(b.loc[d, "n"]))[:n].astype(float))
                gaps[d] = diff.mean() * 100
                reps.append(diff[rng.integers(0, n, size=(n_boot, n))].mean(axis=1) * 100)
            lo, hi = percentile_interval(np.mean(reps, axis=0), level)
            mean = float(np.mean(list(gaps.values())))
            worst = max(gaps, key=gaps.get)
            out.append({"protocol": key[0], "sampling": key[1], "profile": key[2], "model": key[3],
                        "label": b.model_label.iloc[0], "eps": float(eps), "pgd": a.attack_label.iloc[0],
                        "gap": mean, "gap_low": lo, "gap_high": hi, "datasets": len(common),
                        "largest_gap_dataset": worst, "largest_gap": gaps[worst],
                        "flag": bool(mean > gap_flag and lo > 0)})
    return pd.DataFrame(out)


def _cell(value: float, low: float, high: float) -> str:
    """'value [low, high]' in points, one decimal (the interval left out when it is not known)."""
    if np.isnan(low):
        return f"{value:.1f}"
    return f"{value:.1f} [{low:.1f}, {high:.1f}]"


def scoreboard(rows: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, gap_flag: float = 3.0) -> dict[str, pd.DataFrame]:
    """One table per protocol (key 'protocol / sampling / profile'): a row per scored model, its average accuracy
    over the datasets with intervals (clean, then each attack and eps), the PGD-minus-AutoAttack gap per eps and its
    flag, the number of datasets, the device seconds, the checkpoint's sha256 and the numerics versions; sorted by
    the average robust accuracy (the mean of every attack-and-eps average), best first ('robust average')."""
    if rows.empty:
        return {}
    scores = score_table(rows, n_boot=n_boot, seed=seed)
    gaps = gap_table(rows, n_boot=n_boot, seed=seed, gap_flag=gap_flag)
    tables = {}
    for (protocol, sampling, profile), sub in scores[scores.dataset == "average"].groupby(
            ["protocol", "sampling", "profile"], sort=False):
        lines = []
        for model, m in sub.groupby("model", sort=False):
            cells = rows[(rows.model == model) & (rows.protocol == protocol) & (rows.sampling == sampling)
                         & (rows.profile == profile)]
            line = {"model": m.label.iloc[0]}
            robust = []
            for r in m.itertuples(index=False):
                column = "clean" if r.attack == "clean" else f"{r.attack_label} @ {r.eps:g}/255"
                line[column] = _cell(r.accuracy, r.low, r.high)
                robust += [] if r.attack == "clean" else [r.accuracy]
            line["robust average"] = float(np.mean(robust)) if robust else np.nan
            g = gaps[(gaps.model == model) & (gaps.protocol == protocol) & (gaps.sampling == sampling)
                     & (gaps.profile == profile)] if not gaps.empty else gaps
            for r in g.itertuples(index=False):
                line[f"gap @ {r.eps:g}/255"] = _cell(r.gap, r.gap_low, r.gap_high)
            line["gap flag"] = bool(g.flag.any()) if not g.empty else False
            line["datasets"] = int(cells.dataset.nunique())
            line["images per dataset"] = int(cells[cells.attack == "clean"].n.max())
            line["device seconds"] = round(float(cells.seconds.sum()), 1)
            for column, field, width in (("sha256", "checkpoint_sha256", 16), ("format", "checkpoint_format", None),
                                         ("numerics", "numerics", None)):
                value = cells[field].iloc[0] if field in cells else ""
                line[column] = "" if pd.isna(value) else str(value)[:width]
            lines.append(line)
        table = pd.DataFrame(lines).sort_values("robust average", ascending=False).set_index("model")
        tables[f"{protocol} / {sampling} / {profile}"] = table
    return tables


def published_beside(table: pd.DataFrame, published: pd.DataFrame, *, names: Mapping[str, str]) -> pd.DataFrame:
    """The published dataset averages of each scored model (names: scoreboard label -> the method of the published
    table) beside ours: per model, metric, attack and eps, the published value with its source, table, protocol
    and the number of datasets, and our average under the matching column of the scoreboard table."""
    avg = published[published.dataset == "average"]
    out = []
    for label, method in names.items():
        for r in avg[avg.method == method].itertuples(index=False):
            ours = np.nan
            if label in table.index:
                if r.metric == "clean":
                    column = "clean"
                else:
                    column = next((c for c in table.columns if c.endswith(f"@ {float(r.eps):g}/255")
                                   and ("AutoAttack" in c) == str(r.attack).startswith("AutoAttack")
                                   and not c.startswith("gap")), None)
                if column is not None and column in table.columns:
                    ours = float(str(table.loc[label, column]).split(" ")[0])
            out.append({"model": label, "method (published)": method, "metric": r.metric, "attack": r.attack,
                        "eps": r.eps, "published": r.value, "ours": ours, "source": r.source, "table": r.table,
                        "protocol (authors)": getattr(r, "protocol", ""), "datasets": getattr(r, "datasets", np.nan)})
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The score CLI's parser: ScoreConfig's fields, --store, --plan, DispatchConfig's fields."""
    ap = cli_parser("score one weights file under the scoreboard's protocol into its keyed, resumable store "
                    "(clean, PGD-100 and AutoAttack at 1/255 and 4/255 on the 16 datasets by default)",
                    prog="python -m nbhelpers.score",
                    usage='%(prog)s --checkpoint FILE --name "NAME" [--profile paper --data_root ROOT] '
                          '[--FIELD VALUE ...] [--plan] (--help lists them)')
    add_arguments(ap, ScoreConfig)
    ap.add_argument("--store", default=str(STORE_PATH), help="the scoreboard's JSON-lines store")
    ap.add_argument("--plan", action="store_true",
                    help="print the cells and the estimated device time (a measured pass of the model), compute nothing")
    add_arguments(ap.add_argument_group("dispatch (nbhelpers.dispatch: jobs through submitit)"), DispatchConfig)
    return ap


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m nbhelpers.score --checkpoint FILE --name NAME [ScoreConfig's fields] [--store PATH] [--plan]
    [--dispatch local --workers 2 | --dispatch slurm ...]: the scores, then the model's scoreboard line."""
    ap = build_parser()
    args = vars(ap.parse_args(argv))
    store, plan = args.pop("store"), args.pop("plan")
    jobs = {name: args.pop(name) for name in DispatchConfig.field_names()}
    cfg = config_or_exit(ap, ScoreConfig, args)  # unknown protocol, attack, dataset, a missing file: first
    options = config_or_exit(ap, DispatchConfig, jobs)
    device = utils.select_device(cfg.device)
    try:
        if cfg.profile == "paper":
            notebook.check_paper_data(cfg)  # every requested dataset under data_root, before any work
        check_name(store, cfg.name, utils.file_fingerprint(cfg.checkpoint))
        model, preprocess = load_checkpoint_model(cfg, device=device)  # format and architecture checked here
    except (FileNotFoundError, checkpoints.CheckpointError, ScoreError, ValueError) as err:
        ap.error(str(err))
    cells = plan_cells(cfg, [model.name])
    if plan:
        table = estimate_plan(cfg, cells, pass_seconds=measure_pass_seconds(model, device=device),
                              stored=stored_cells(store, cfg, model))
        print(table.to_string(index=False))
        print(json.dumps({"cells": len(cells), "to compute": int(table.cells.sum() - table.stored.sum()),
                          "device seconds (at most)": round(float(table["device seconds (at most)"].sum()), 1),
                          "device": str(device)}))
        return 0
    if options.dispatch != "none":
        try:
            done = dispatch_score(cfg, options, store_path=store)
        except dispatch.DispatchError as err:
            print(err)
            return 1
    else:
        run = score_models({model.name: model}, cfg, preprocess=preprocess, base_model=cfg.model, store_path=store,
                           device=device)
        done = {"computed": run.computed, "reused": run.reused}
    rows = load_scores(store)
    mine = rows[(rows.model == model.name) & (rows.protocol == cfg.protocol_name())
                & (rows.n_requested == cfg.n_samples) & (rows.sampling.map(_rule) == cfg.sampling_rule())]
    for name, table in scoreboard(mine, n_boot=cfg.bootstrap, seed=cfg.seed, gap_flag=cfg.gap_flag).items():
        print(f"{name}:\n{table.T.to_string()}")
    print(json.dumps({**done, "cells": len(cells), "store": str(store), "name": cfg.name,
                      "sha256": model.tags["checkpoint_sha256"], "format": model.tags["checkpoint_format"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
