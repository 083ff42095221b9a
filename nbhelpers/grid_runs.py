"""05's evaluation grid from the command line: the models notebook 05 compares, evaluated into its store, in this
process or as jobs through submitit (:mod:`nbhelpers.dispatch`).

``python -m nbhelpers.grid_runs`` takes :class:`nbhelpers.config.EvaluationConfig`'s fields as flags and does what
notebook 05 does before its tables: builds each model (:func:`study_runs.prepare_models`: trained or loaded from
the cache, at 06's selected configuration or at the knobs) and runs :func:`grid.run_grid` into the store
(``results/05_evaluation.jsonl`` unless ``--store``), reusing stored cells. With ``--dispatch local|slurm`` the
models are split into jobs (a job: some of the models, all their cells; the released checkpoints go together in
one job), each builds its models and writes the cells it computes to its own shard; the shards are merged into the
store in the order notebook 05 computes its cells (datasets, then models, then attacks and radii), so the store
ends as a single-process run's, apart from ``seconds`` and ``run`` (bookkeeping; see :mod:`nbhelpers.dispatch`).
``python -m nbhelpers.grid`` keeps the store's upkeep (``--status``, ``--compact``, ``--prune``).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from nbhelpers import dispatch, evaluation, grid, notebook, paths, study_runs, suite, utils
from nbhelpers.config import DispatchConfig, EvaluationConfig, add_arguments, cli_parser, config_or_exit
from nbhelpers.models import create_model_and_transforms

STORE_PATH = paths.RESULTS_DIR / "05_evaluation.jsonl"
RELEASED = "released checkpoints"  # the job unit that evaluates every released checkpoint of the config


def model_order(cfg: EvaluationConfig) -> list[str]:
    """The evaluated models' names in notebook 05's order: cfg.models, then the released checkpoints."""
    return [*cfg.models, *(suite.released_name(label) for label in cfg.released_checkpoints())]


def plan_cells(cfg: EvaluationConfig) -> list[tuple]:
    """Every (dataset, model, attack, eps, n) cell of the config, in the order notebook 05 computes them."""
    return evaluation.plan_cells(datasets=cfg.grid_datasets(), models=model_order(cfg), attacks=list(cfg.attacks),
                                 eps_list=list(cfg.eps_list), strong_attacks=list(cfg.strong_attacks),
                                 strong_eps_list=list(cfg.strong_eps_list), n=cfg.n_samples, n_strong=cfg.n_strong,
                                 strong_datasets=cfg.strong_datasets())


def evaluate_models(cfg: EvaluationConfig, names: Sequence[str], *, released: bool = True,
                    store_path: str | Path = STORE_PATH, device: torch.device | str = "cpu",
                    shard: str | Path | None = None, progress: bool = True) -> grid.GridRun:
    """Notebook 05's grid for the named models (and cfg's released checkpoints if released): seed, build them
    (study_runs.prepare_models), run grid.run_grid into the store (a dispatched job: into its shard)."""
    utils.seed_everything(cfg.seed)
    base, preprocess = create_model_and_transforms(**cfg.model_spec(), device=device)
    build = cfg if released else cfg.replace(checkpoints="")
    models, _ = study_runs.prepare_models(build, list(names), base=base, preprocess=preprocess, device=device,
                                          progress=progress)
    return grid.run_grid(models, profile=cfg.profile, datasets=cfg.grid_datasets(), eps_list=list(cfg.eps_list),
                         attacks=list(cfg.attacks), strong_attacks=list(cfg.strong_attacks),
                         strong_eps_list=list(cfg.strong_eps_list), strong_datasets=cfg.strong_datasets(),
                         n=cfg.n_samples, n_strong=cfg.n_strong, finetune_set=cfg.finetune_set(), seed=cfg.seed,
                         batch_size=cfg.batch_size, data_root=cfg.data_root, preprocess=preprocess,
                         sampling=cfg.sampling_rule(), device=device, config=cfg.to_dict(),
                         base_model=base.model_name, rerun=cfg.rerun, fast=cfg.fast_attacks, amp=cfg.amp,
                         path=store_path, shard=shard, progress=progress, start=cfg.start_scheme())


@dataclass(frozen=True)
class GridJob:
    """One dispatched job of the grid: its models (and whether it evaluates the released checkpoints), the store
    it reads and the shard its rows go to."""

    cfg: EvaluationConfig
    models: tuple
    released: bool
    store: str
    shard: str
    threads: int = 0


def run_grid_job(job: GridJob) -> int:
    """A dispatched job, in its worker: evaluate its models' cells that the store and the shards lack into its shard;
    returns how many cells it computed."""
    dispatch.set_threads(job.threads)
    run = evaluate_models(job.cfg, list(job.models), released=job.released, store_path=job.store, shard=job.shard,
                          device=utils.select_device(job.cfg.device), progress=False)
    return run.computed


def cell_position(cfg: EvaluationConfig) -> Callable[[Mapping], int | None]:
    """position() for dispatch.merge_shards: a row's index in plan_cells(cfg), None for a row of other settings."""
    index = {(d, m, a, float(e), int(n)): i for i, (d, m, a, e, n) in enumerate(plan_cells(cfg))}
    same = {"profile": cfg.profile, "seed": cfg.seed, "protocol": cfg.protocol_name(), "sampling": cfg.sampling_rule()}

    def position(row: Mapping) -> int | None:
        if any(row.get(k) != v for k, v in same.items()):
            return None
        return index.get((row.get("dataset"), row.get("model"), row.get("attack"), float(row.get("eps", -1)),
                          int(row.get("n_requested", -1))))
    return position


def dispatch_grid(cfg: EvaluationConfig, options: DispatchConfig, *, store_path: str | Path = STORE_PATH,
                  progress: bool = True, merge_only: bool = False) -> dict[str, int]:
    """evaluate_models for every model of cfg through jobs (nbhelpers.dispatch): the models split by options, each
    job computing what the store and the shards lack into its shard; then the shards merged into the store in
    plan order (a recomputed or adopted cell replaces its stored row, and the store is compacted, as run_grid
    does). Returns {"computed", "merged", "replaced", "pending" (rows left in shards)}.

    merge_only: compute nothing, only merge what the shards hold. A failed job raises dispatch.DispatchError after
    the merge; the cells it finished wait in its shard, and a rerun reuses them. On Slurm, dispatch.check_slurm
    first (no time estimate: the grid has no calibration).
    """
    if options.dispatch == "slurm" and not merge_only:
        dispatch.check_slurm(options, store_path)  # partition, time limit, GPUs, folders: before any work
    store = grid.open_store(store_path)
    if Path(store_path).is_file() and store.stored_format() != grid.STORE_FORMAT_VERSION:
        grid.compact_store(store_path)  # an older format is converted once, before the jobs read the store
    units = [] if merge_only else [*cfg.models, *([RELEASED] if cfg.released_checkpoints() else [])]
    chunks = dispatch.split_work(units, options)
    shards = dispatch.new_shards(store_path, len(chunks), tag="grid")
    jobs = [GridJob(cfg, tuple(u for u in chunk if u != RELEASED), RELEASED in chunk, str(store_path), str(shard),
                    options.threads) for chunk, shard in zip(chunks, shards)]
    outcomes = (dispatch.run_jobs(run_grid_job, jobs, [s.stem for s in shards], options, name="grid",
                                  folder=dispatch.job_folder(store_path, options), progress=progress)
                if jobs else [])
    released = {suite.released_name(label) for label in cfg.released_checkpoints()}
    finished = {m for job, o in zip(jobs, outcomes) if o.ok for m in (*job.models, *(released if job.released else ()))}
    cells, position = plan_cells(cfg), cell_position(cfg)
    stored = {position(r) for r in grid.load_store(store_path)[0]} if Path(store_path).is_file() else set()
    merged = dispatch.merge_shards(store, position=position, n=len(cells), replace=True,
                                   settled=lambda p: cells[p][1] in finished or p in stored)
    if merged["replaced"]:
        grid.compact_store(store_path)  # each cell's last row in place of its older one, as run_grid leaves it
    out = {"computed": sum(int(o.result) for o in outcomes if o.ok), **merged}
    dispatch.check_outcomes(outcomes, what="05's grid")
    return out


def build_parser() -> argparse.ArgumentParser:
    """05's grid CLI's parser: EvaluationConfig's fields, --store, DispatchConfig's fields, --merge."""
    ap = cli_parser("compute (or resume) notebook 05's evaluation grid into its store",
                    prog="python -m nbhelpers.grid_runs",
                    usage="%(prog)s [--FIELD VALUE ...] [--store STORE] [--merge] (--help lists them)")
    add_arguments(ap, EvaluationConfig)
    ap.add_argument("--store", default=str(STORE_PATH), help="the grid's JSON-lines store")
    add_arguments(ap.add_argument_group("dispatch (nbhelpers.dispatch: jobs through submitit)"), DispatchConfig)
    ap.add_argument("--merge", action="store_true",
                    help="merge the cells that dispatched jobs left in <store>.shards into the store, compute nothing")
    return ap


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m nbhelpers.grid_runs [EvaluationConfig's fields] [--store PATH]
    [--dispatch local --workers 2 | --dispatch slurm --slurm_partition gpu ...] [--merge]."""
    ap = build_parser()
    args = vars(ap.parse_args(argv))
    store, merge = args.pop("store"), args.pop("merge")
    jobs = {name: args.pop(name) for name in DispatchConfig.field_names()}
    cfg = config_or_exit(ap, EvaluationConfig, args)  # an unknown profile or model first
    options = config_or_exit(ap, DispatchConfig, jobs)
    if cfg.profile == "paper":
        notebook.check_paper_data(cfg)  # every dataset there, before any work
    if merge or options.dispatch != "none":
        try:
            done = dispatch_grid(cfg, options, store_path=store, merge_only=merge)
        except dispatch.DispatchError as err:
            print(err)
            return 1
    else:
        run = evaluate_models(cfg, list(cfg.models), store_path=store, device=utils.select_device(cfg.device))
        done = {"computed": run.computed, "reused": run.reused, "adopted": run.adopted}
    print(json.dumps({**done, "store": store, **dispatch.shard_status(grid.open_store(store))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
