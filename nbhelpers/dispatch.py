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

**On a real Slurm** (docs/CLUSTER.md; tests/test_slurm_cluster.py runs a one-node cluster): before anything is
submitted, :func:`check_slurm` asks sinfo about the partition (known, up, its time limit, GPUs) and probes that the
store's shard folder and the job folder can be written and are not on a filesystem only this machine sees; the
command waits through squeue and the tasks' result files (:func:`collect_slurm_jobs`), not sacct, which needs
Slurm's accounting; tasks are requeueable (``--requeue``) and a requeued study task skips the runs its shard holds.

**Equal to a single-process run.** Same keys, same rows field by field, in the same order, except bookkeeping that
differs between any two runs: ``seconds`` (both stores) and ``run`` (05's run stamp: when, where, by which
process). Training and attacks are deterministic for a given machine, library build and thread count, not across
thread counts (docs/REPRODUCIBILITY.md): a job keeps torch's default thread count unless ``threads`` is
set, so its numbers equal a single-process run's at the same count.
"""
from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import submitit
import torch

from nbhelpers.config import ConfigError, DispatchConfig
from nbhelpers.store import JsonlStore
from nbhelpers.utils import progress_bar

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


# ---------------------------------------------------------------------------------------------- Slurm, before submission
LOCAL_FILESYSTEMS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "tmpfs", "ramfs", "overlay", "squashfs"}
"""Filesystem types that only the machine they are mounted on sees (a shared store needs NFS, Lustre, GPFS, ...)."""


@dataclass(frozen=True)
class SlurmPartition:
    """A partition as sinfo lists it: its name, whether it is the default and up, its time limit (minutes; None:
    none), its generic resources (GRES, e.g. 'gpu:4' or '(null)') and its nodes (host names)."""

    name: str
    default: bool
    up: bool
    max_minutes: int | None
    gres: tuple[str, ...]
    nodes: tuple[str, ...]

    def has_gpus(self) -> bool:
        """Whether some node of the partition offers GPUs as a generic resource."""
        return any(g.startswith("gpu") for g in self.gres)


def slurm_minutes(text: str) -> int | None:
    """Slurm's time format (sinfo's %l: 'infinite', 'MM', 'MM:SS', 'HH:MM:SS', 'D-HH', 'D-HH:MM', 'D-HH:MM:SS') in
    whole minutes (seconds rounded down); None for no limit."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a"):
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(x) for x in clock.split(":")]
    if days:  # D-HH[:MM[:SS]]
        parts = (parts + [0, 0])[:3]
    else:  # MM, MM:SS or HH:MM:SS
        parts = {1: [0, *parts, 0], 2: [0, *parts]}.get(len(parts), parts)
    hours, minutes, seconds = parts
    return (int(days or 0) * 24 + hours) * 60 + minutes + seconds // 60


def slurm_command(args: Sequence[str], *, timeout: float = 60) -> str:
    """Run one of Slurm's commands (sinfo, scontrol) and return its output; a ConfigError saying what is wrong when
    it is not on PATH, fails or hangs."""
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ConfigError(f"dispatch 'slurm' needs Slurm's {args[0]} on PATH, and it is not there: run on a machine "
                          "that submits to the cluster (a login node), or load Slurm's module first") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{' '.join(args)} did not answer in {timeout:g} s: is slurmctld reachable?") from None
    if done.returncode != 0:
        raise ConfigError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def slurm_partitions() -> dict[str, SlurmPartition]:
    """{name: SlurmPartition} of the cluster, from sinfo (node names expanded by scontrol show hostnames)."""
    parts: dict[str, dict] = {}
    for line in slurm_command(["sinfo", "--noheader", "--format=%P|%a|%l|%G|%N"]).splitlines():
        if not line.strip():
            continue
        name, avail, limit, gres, nodes = line.split("|")
        p = parts.setdefault(name.rstrip("*"), {"default": name.endswith("*"), "up": avail == "up",
                                               "max_minutes": slurm_minutes(limit), "gres": set(), "nodes": set()})
        p["gres"].update(g for g in gres.split(",") if g and g != "(null)")
        if nodes and nodes != "n/a":
            p["nodes"].update(slurm_command(["scontrol", "show", "hostnames", nodes]).split())
    return {name: SlurmPartition(name, p["default"], p["up"], p["max_minutes"], tuple(sorted(p["gres"])),
                                 tuple(sorted(p["nodes"]))) for name, p in parts.items()}


def filesystem_type(path: str | os.PathLike) -> str:
    """The type of the filesystem holding an existing path (/proc/mounts' longest mount point above it; '' where
    /proc/mounts is not there)."""
    real = os.path.realpath(path)
    best, kind = "", ""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def check_writable(folder: str | os.PathLike, *, what: str) -> None:
    """A ConfigError unless a file can be made (and is removed again) in folder or, where it does not exist yet, in
    its nearest existing parent (where it would be made). Leaves nothing behind."""
    target = Path(folder).absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{what} {target} cannot be written: {existing} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=existing)
    except OSError as err:
        raise ConfigError(f"{what} {target} cannot be written: {err.strerror} ({existing})") from None
    os.close(fd)
    os.unlink(probe)


def this_host() -> set[str]:
    """This machine's names (hostname, its short form, its fully qualified name, localhost)."""
    name = socket.gethostname()
    return {name, name.split(".")[0], socket.getfqdn(), "localhost"}


def check_slurm(cfg: DispatchConfig, store_path: str | os.PathLike) -> SlurmPartition:
    """Before submitting anything to Slurm, a ConfigError for what the cluster would refuse or the jobs could not
    do: sinfo or scontrol missing, an unknown or down partition (or no default one), a time limit above the
    partition's, GPUs asked of a partition without GPU GRES, a store or job folder that cannot be written or lies on
    a filesystem only this machine sees while the partition's nodes are other machines. Writes nothing; returns
    the partition."""
    partitions = slurm_partitions()
    if cfg.slurm_partition:
        if cfg.slurm_partition not in partitions:
            raise ConfigError(f"Slurm has no partition {cfg.slurm_partition!r} (sinfo lists {sorted(partitions)}): "
                              "pass one of them as --slurm_partition")
        part = partitions[cfg.slurm_partition]
    else:
        defaults = [p for p in partitions.values() if p.default]
        if not defaults:
            raise ConfigError(f"Slurm has no default partition: pass --slurm_partition, one of {sorted(partitions)}")
        part = defaults[0]
    if not part.up:
        raise ConfigError(f"Slurm partition {part.name!r} is not up (sinfo): its jobs would wait")
    if part.max_minutes is not None and cfg.job_minutes > part.max_minutes:
        raise ConfigError(f"--job_minutes {cfg.job_minutes} is above the time limit of partition {part.name!r} "
                          f"({part.max_minutes} minutes): Slurm would refuse the jobs or hold them forever; lower "
                          "--job_minutes and --runs_per_job")
    if cfg.slurm_gpus_per_job and not part.has_gpus():
        raise ConfigError(f"--slurm_gpus_per_job {cfg.slurm_gpus_per_job} asks partition {part.name!r} for GPUs, "
                          f"and its nodes offer none (GRES {list(part.gres) or 'none'}): pass --slurm_gpus_per_job 0 "
                          "for CPU jobs, or a GPU partition")
    here = this_host()
    for folder, what in ((shard_dir(store_path), "the store's shard folder"),
                         (job_folder(store_path, cfg), "the job folder (submitit's pickles and logs)")):
        check_writable(folder, what=what)
        existing = next(p for p in (Path(folder).absolute(), *Path(folder).absolute().parents) if p.exists())
        kind = filesystem_type(existing)
        if kind in LOCAL_FILESYSTEMS and part.nodes and not set(part.nodes) <= here:
            raise ConfigError(f"{what} {folder} is on a {kind} filesystem that only this machine sees, and "
                              f"partition {part.name!r} runs its jobs on {list(part.nodes)[:4]}: put the store "
                              "(and --job_folder) on a filesystem the nodes share")
    return part


def check_job_seconds(cfg: DispatchConfig, job_seconds: Sequence[float], *, estimate: str) -> None:
    """A ConfigError if a job's estimated seconds (one per job, in submission order; `estimate` says how they were
    estimated) exceed the jobs' time limit, job_minutes: Slurm would kill it before its last run."""
    if not job_seconds:
        return
    worst = max(range(len(job_seconds)), key=lambda i: job_seconds[i])
    if job_seconds[worst] > 60 * cfg.job_minutes:
        raise ConfigError(f"job {worst} of {len(job_seconds)} is estimated at {job_seconds[worst] / 60:.1f} minutes "
                          f"({estimate}), longer than --job_minutes {cfg.job_minutes}: raise --job_minutes (up to "
                          "the partition's limit) or lower --runs_per_job")


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
    extra: dict[str, object] = {"requeue" if cfg.slurm_requeue else "no-requeue": True}
    if cfg.slurm_gpus_per_job:
        if cfg.slurm_gpu_flag == "gres":
            extra["gres"] = f"gpu:{cfg.slurm_gpus_per_job}"
        elif cfg.slurm_gpu_flag == "gpus_per_task":
            params["slurm_gpus_per_task"] = cfg.slurm_gpus_per_job
        else:
            params["gpus_per_node"] = cfg.slurm_gpus_per_job
    if cfg.slurm_account:
        params["slurm_account"] = cfg.slurm_account
    if cfg.slurm_qos:
        params["slurm_qos"] = cfg.slurm_qos
    if cfg.slurm_cpus_per_task:
        params["cpus_per_task"] = cfg.slurm_cpus_per_task
    if cfg.slurm_mem_gb:
        params["mem_gb"] = cfg.slurm_mem_gb
    if cfg.slurm_partition:
        params["slurm_partition"] = cfg.slurm_partition
    if cfg.slurm_setup:
        params["slurm_setup"] = list(cfg.slurm_setup)
    params["slurm_additional_parameters"] = extra
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
    bar = progress_bar(total=len(jobs), desc="jobs", disable=not progress)
    for _ in submitit.helpers.as_completed(list(jobs), poll_frequency=poll_seconds):
        bar.update(1)
    bar.close()
    return [outcome(job, name) for job, name in zip(jobs, names)]


def outcome(job: submitit.Job, name: str) -> JobOutcome:
    """A finished job's result or error; a job that left no result file (cancelled, timed out, killed) is an error
    naming its Slurm id, its log and the log's end."""
    if not job.paths.result_pickle.exists():
        log = job.paths.stderr
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"
        return JobOutcome(name, error=f"job {job.job_id} ended without a result (cancelled, timed out, killed, or "
                                      f"preempted without requeue); its log {log} ends:\n{tail}")
    error = job.exception()
    return JobOutcome(name, error=str(error) or type(error).__name__) if error is not None else \
        JobOutcome(name, result=job.result())


def slurm_queued(job_ids: Sequence[str]) -> set[str] | None:
    """The jobs and array tasks ('<array>_<task>') among job_ids that Slurm still holds (pending, running, requeued,
    completing), by squeue; None where squeue cannot say (not there, failing)."""
    arrays = sorted({str(j).split("_")[0] for j in job_ids})
    try:
        done = subprocess.run(["squeue", "--noheader", "--array", "--format=%i", f"--jobs={','.join(arrays)}"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return set() if "Invalid job id" in done.stderr else None  # every job of the list has left the queue
    return set(done.stdout.split())


def collect_slurm_jobs(jobs: Sequence[submitit.Job], names: Sequence[str], *, progress: bool = False,
                       poll_seconds: float = 30.0, grace_seconds: float = 15.0) -> list[JobOutcome]:
    """Wait for every Slurm array task without sacct (a cluster may keep no accounting, as the test's does): a task
    is done once its result file is there, or once squeue has not listed it for grace_seconds (the shared filesystem
    may show a result file late) and it still has none: cancelled, timed out or killed. In submission order."""
    bar = progress_bar(total=len(jobs), desc="jobs", disable=not progress)
    waiting, gone = set(range(len(jobs))), {}
    while waiting:
        queued = slurm_queued([jobs[i].job_id for i in waiting])
        now = time.monotonic()
        for i in sorted(waiting):
            job = jobs[i]
            if job.paths.result_pickle.exists():
                waiting.discard(i)
            elif queued is not None and job.job_id not in queued:
                if now - gone.setdefault(i, now) >= grace_seconds:
                    waiting.discard(i)
            else:
                gone.pop(i, None)
            if i not in waiting:
                bar.update(1)
        if waiting:
            time.sleep(min(poll_seconds, grace_seconds) if gone else poll_seconds)
    bar.close()
    return [outcome(job, name) for job, name in zip(jobs, names)]


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
        if cfg.dispatch == "slurm":
            return collect_slurm_jobs(jobs, names, progress=progress, poll_seconds=cfg.slurm_poll_seconds)
        return collect_jobs(jobs, names, progress=progress, poll_seconds=1.0)
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
