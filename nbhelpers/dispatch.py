"""Independent jobs through submitit (05's grid, 06's study): one shard of rows per job, merged into the store.

The CLIs of 05's grid (:mod:`nbhelpers.grid_runs`) and 06's study (:mod:`nbhelpers.study_runs`) split their
missing runs into jobs (a job: a picklable top-level function and its spec) and run them, by ``dispatch``
(:class:`nbhelpers.config.DispatchConfig`):

- ``none``: not through here at all: the CLI's in-process path, unchanged.
- ``inline``: the jobs one after another in this process, through the same shards and merge (for debugging).
- ``local``: ``submitit.LocalExecutor``: one worker process per job on this machine, ``workers`` of them (or one per
  listed GPU, each seeing only its own through ``CUDA_VISIBLE_DEVICES``).
- ``slurm``: ``submitit.AutoExecutor(cluster="slurm")``: a Slurm job array, ``runs_per_job`` runs per task, with
  the partition, GPUs, CPUs, memory, time limit and array parallelism as options.

**Shards (ours).** A job never writes the shared store: it appends its rows, one fsynced line each, to its own
shard ``<store>.shards/<UTC time>-<pid>-<tag>-<i>.jsonl`` (a :class:`nbhelpers.store.JsonlStore` without
``flock``, since a cluster's shared filesystem may not support it; one writer per file needs none). After the jobs
end, this process merges the shards into the store *in plan order* (the order a single-process run computes in)
and deletes the shards whose rows are all in the store. So a store filled by jobs holds the same rows in the same
order as one filled by a single process. When a job fails or is killed, its finished rows stay in its shard; the
merge stops at the first planned run that has no row yet (as a single process killed there would have), the rows
after it wait in their shards, and a rerun computes only the runs that neither the store nor a shard holds, then
merges everything in plan order. A shard's last line cut short by a kill is ignored (``JsonlStore``).

**Equal to a single-process run.** Same keys, same rows field by field, in the same order, except bookkeeping that
differs between any two runs: ``seconds`` (both stores) and ``run`` (05's run stamp: when, where, by which
process). Training and attacks are deterministic for a given machine, library build and thread count, not across
thread counts (docs/REPRODUCIBILITY.md): a job keeps torch's default thread count unless ``threads`` is
set, so its numbers equal a single-process run's at the same count.
"""
from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import submitit
import torch
from tqdm.auto import tqdm

from nbhelpers.config import DispatchConfig
from nbhelpers.store import JsonlStore

SHARDS_SUFFIX = ".shards"  # <store>.shards/: the jobs' rows until they are merged
JOBS_SUFFIX = ".jobs"  # <store>.jobs/: submitit's pickles and logs (default job_folder)


class DispatchError(RuntimeError):
    """Some jobs failed; their finished rows are kept in their shards (rerun to compute only what is missing)."""


@dataclass
class JobOutcome:
    """What one job returned (its result, or the error it ended with: empty when it succeeded)."""

    name: str
    result: object = None
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether the job ended without an error."""
        return not self.error


# ---------------------------------------------------------------------------------------------- shards
def shard_dir(store_path: str | os.PathLike) -> Path:
    """The folder of a store's shards: <store>.shards beside it."""
    path = Path(store_path)
    return path.with_name(path.name + SHARDS_SUFFIX)


def job_folder(store_path: str | os.PathLike, cfg: DispatchConfig) -> Path:
    """Where submitit keeps its pickles and logs: cfg.job_folder, else <store>.jobs beside the store."""
    path = Path(store_path)
    return Path(cfg.job_folder) if cfg.job_folder else path.with_name(path.name + JOBS_SUFFIX)


def shard_files(store_path: str | os.PathLike) -> list[Path]:
    """The store's shard files, oldest first (their names start with the UTC time they were made)."""
    folder = shard_dir(store_path)
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def new_shards(store_path: str | os.PathLike, n: int, *, tag: str) -> list[Path]:
    """n new shard paths for this dispatch's jobs (not created yet): <store>.shards/<UTC time>-<pid>-<tag>-<i>.jsonl."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return [shard_dir(store_path) / f"{stamp}-{os.getpid()}-{tag}-{i:04d}.jsonl" for i in range(n)]


def open_shard(store: JsonlStore, path: str | os.PathLike) -> JsonlStore:
    """A shard of `store`: same key fields and format, written by one job, so without flock."""
    return JsonlStore(path, key_fields=store.key_fields, format_version=store.format_version,
                      description=store.description, lock=False)


def shard_status(store: JsonlStore) -> dict[str, int]:
    """Shard files of a store and the complete rows they hold (merged or not)."""
    files = shard_files(store.path)
    return {"shard_files": len(files), "shard_rows": sum(len(open_shard(store, f).rows()) for f in files)}


def merge_shards(store: JsonlStore, *, position: Callable[[Mapping], int | None], n: int,
                 settled: Callable[[int], bool] = lambda p: False, replace: bool = False) -> dict[str, int]:
    """Append the shards' rows to the store in plan order; returns {"merged", "replaced", "pending"}.

    position(row): the row's place in the plan (0 .. n-1), None for a row of another plan (left in its shard).
    For each place in order: its shard row (the newest shard's, if several) is appended unless the store holds
    that very row; a place without one stops the merge unless settled(place) (nothing to write there: a cell
    reused from the store), so the store only ever grows by a prefix of the plan. replace: a row whose key the store
    holds with other content supersedes it (05: recomputed or adopted cells); else it is left in its shard (06:
    a key is computed once). Run stamps that merged rows name are copied from their shard's meta file. Shards whose
    rows are all in the store are deleted; "pending" counts the planned rows left in shards.
    """
    files = shard_files(store.path)
    planned: dict[int, dict] = {}
    stamps: dict[str, dict] = {}
    for f in files:
        shard = open_shard(store, f)
        for row in shard.rows():
            p = position(row)
            if p is not None and 0 <= p < n:
                planned[p] = row
        if store.format_version is not None:
            stamps.update(shard.runs())
    latest = store.latest()

    def done(row: Mapping) -> bool:  # the store holds this row (or, without replace, a row of its key)
        old = latest.get(store.key(row))
        return old == row or (old is not None and not replace)

    merged = replaced = 0
    for p in range(n):
        row = planned.get(p)
        if row is None:
            if settled(p):
                continue
            break
        if done(row):
            continue
        old = latest.get(store.key(row))
        if store.format_version is not None and row.get("run") in stamps:
            store.add_run(str(row["run"]), stamps[str(row["run"])])
        store.append(row, replace=old is not None)
        latest[store.key(row)] = row
        merged += 1
        replaced += old is not None
    for f in files:  # a shard is done with once the store holds every row of it
        if all(done(r) for r in open_shard(store, f).rows()):
            f.unlink()
            open_shard(store, f).meta_path.unlink(missing_ok=True)
    if files and not any(shard_dir(store.path).iterdir()):
        shard_dir(store.path).rmdir()
    pending = sum(1 for row in planned.values() if not done(row))
    return {"merged": merged, "replaced": replaced, "pending": pending}


# ---------------------------------------------------------------------------------------------- jobs
def set_threads(threads: int) -> None:
    """In a job: torch's intra-op thread count (0: leave torch's default)."""
    if threads:
        torch.set_num_threads(threads)


def split_work(items: Sequence[object], cfg: DispatchConfig) -> list[list[object]]:
    """The items (runs or models, in plan order) as jobs: round-robin over the local workers (inline and local; the
    item at plan position i goes to job i mod workers, so every job gets early and late work), or consecutive
    chunks of runs_per_job (slurm). Empty jobs are dropped."""
    if cfg.dispatch == "slurm":
        size = cfg.runs_per_job
        return [list(items[i:i + size]) for i in range(0, len(items), size)]
    k = cfg.n_workers()
    return [chunk for chunk in (list(items[i::k]) for i in range(k)) if chunk]


def make_executor(cfg: DispatchConfig, folder: str | os.PathLike, *, name: str) -> submitit.Executor:
    """submitit's executor for cfg.dispatch 'local' (LocalExecutor) or 'slurm' (AutoExecutor, cluster='slurm'), with
    the time limit and, on Slurm, the partition, GPUs, CPUs, memory, array parallelism and set-up lines."""
    folder = Path(folder)
    if cfg.dispatch == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=cfg.job_minutes)
        return executor
    if cfg.dispatch != "slurm":
        raise ValueError(f"no submitit executor for dispatch {cfg.dispatch!r}")
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    params: dict[str, object] = {"name": name, "timeout_min": cfg.job_minutes, "nodes": 1, "tasks_per_node": 1,
                                 "slurm_array_parallelism": cfg.slurm_array_parallelism}
    if cfg.slurm_gpus_per_job:
        params["gpus_per_node"] = cfg.slurm_gpus_per_job
    if cfg.slurm_cpus_per_task:
        params["cpus_per_task"] = cfg.slurm_cpus_per_task
    if cfg.slurm_mem_gb:
        params["mem_gb"] = cfg.slurm_mem_gb
    if cfg.slurm_partition:
        params["slurm_partition"] = cfg.slurm_partition
    if cfg.slurm_setup:
        params["slurm_setup"] = list(cfg.slurm_setup)
    executor.update_parameters(**params)
    return executor


def submit_jobs(fn: Callable[[object], object], specs: Sequence[object], cfg: DispatchConfig, *,
                folder: str | os.PathLike, name: str = "tima") -> list[submitit.Job]:
    """Submit fn(spec) for every spec: on Slurm as one job array; locally one worker process each (with gpus, the
    i-th job sees only GPU gpus[i])."""
    executor = make_executor(cfg, folder, name=name)
    if cfg.dispatch == "slurm":
        return executor.map_array(fn, list(specs))
    jobs = []
    for i, spec in enumerate(specs):
        if cfg.gpus:
            executor.update_parameters(visible_gpus=[cfg.gpus[i % len(cfg.gpus)]], gpus_per_node=1)
        jobs.append(executor.submit(fn, spec))
    return jobs


def collect_jobs(jobs: Sequence[submitit.Job], names: Sequence[str], *, progress: bool = False,
                 poll_seconds: float = 1.0) -> list[JobOutcome]:
    """Wait for every job; each one's result or error (the end of its log), in submission order."""
    bar = tqdm(total=len(jobs), desc="jobs", disable=not progress)
    for _ in submitit.helpers.as_completed(list(jobs), poll_frequency=poll_seconds):
        bar.update(1)
    bar.close()
    out = []
    for job, name in zip(jobs, names):
        error = job.exception()
        out.append(JobOutcome(name, error=str(error) or type(error).__name__) if error is not None
                   else JobOutcome(name, result=job.result()))
    return out


def run_jobs(fn: Callable[[object], object], specs: Sequence[object], names: Sequence[str], cfg: DispatchConfig, *,
             folder: str | os.PathLike, name: str = "tima", progress: bool = False) -> list[JobOutcome]:
    """Run fn(spec) for every spec by cfg.dispatch ('inline': here, one after another; 'local', 'slurm': submitit)
    and wait for all of them; a failed job is an outcome with its error, not an exception. Interrupted (Ctrl-C),
    local jobs are cancelled; Slurm jobs go on writing their shards (a rerun merges them)."""
    if cfg.dispatch == "inline":
        out = []
        for spec, job_name in zip(specs, names):
            try:
                out.append(JobOutcome(job_name, result=fn(spec)))
            except Exception:  # noqa: BLE001 - a failed job is reported with the others, as submitit's are
                out.append(JobOutcome(job_name, error=traceback.format_exc()))
        return out
    jobs = submit_jobs(fn, specs, cfg, folder=folder, name=name)
    try:
        return collect_jobs(jobs, names, progress=progress, poll_seconds=1.0 if cfg.dispatch == "local" else 30.0)
    except KeyboardInterrupt:
        if cfg.dispatch == "local":
            for job in jobs:
                job.cancel(check=False)
        raise


def check_outcomes(outcomes: Sequence[JobOutcome], *, what: str) -> None:
    """Raise DispatchError naming the failed jobs, with the end of each one's error."""
    failed = [o for o in outcomes if not o.ok]
    if failed:
        lines = [f"{o.name}: ...{o.error[-1500:]}" for o in failed]
        raise DispatchError(f"{what}: {len(failed)} of {len(outcomes)} jobs failed; their finished rows are kept in "
                            "their shards and a rerun computes only what is missing\n" + "\n".join(lines))


def keyed_positions(keys: Sequence[Hashable], store: JsonlStore) -> Callable[[Mapping], int | None]:
    """position() for merge_shards from a plan given as store keys in plan order."""
    index = {k: i for i, k in enumerate(keys)}
    return lambda row: index.get(store.key(row))
