"""06's study and 05's grid through a real Slurm: a single-node cluster on localhost (Debian's slurm-wlm and munge,
installed by `make slurm`), started by this module in a temporary folder and stopped at its end.

The CLIs' own ``--dispatch slurm`` path submits real job arrays (submitit, sbatch), the jobs run in their own
processes under slurmd, the command waits for them (squeue and the tasks' result files: this cluster keeps no
accounting, so sacct cannot answer) and merges their shards; the merged stores equal a single-process run's row for
row and number for number. One array task is cancelled (scancel) after its first row, and the rerun computes only
the run it did not finish. Skips, with the reason, where no cluster can be started: not root, Slurm or munge not
installed, a daemon that does not come up (named, with the end of its log).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from nbhelpers import dispatch, grid, grid_runs, study, study_runs
from nbhelpers.config import ConfigError, EvaluationConfig, StudyConfig

from test_dispatch import GRID, STUDY, lines, use_cache

pytestmark = pytest.mark.timeout(420)

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scancel", "scontrol")
PARTITION, MAX_MINUTES = "tiny", 10


def run(args: list[str], *, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    """An external command with a timeout, its output captured."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=check)


def free_port() -> int:
    """A TCP port nothing listens on now (so that clusters of other test runs on this machine do not collide)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(folder: Path) -> str:
    """slurm.conf of a one-node cluster on localhost: munge on its own socket, state, spool, logs and pid files in
    `folder`, no accounting, no cgroups, one partition with a time limit; a cancelled task killed a few seconds after
    its SIGTERM (KillWait=0: submitit's task ignores SIGTERM, and a cluster's usual KillWait is 30 s)."""
    cpus = min(2, os.cpu_count() or 1)
    return "\n".join([
        "ClusterName=tima-test", "SlurmctldHost=localhost", f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}", "AuthType=auth/munge", "CredType=cred/munge",
        f"AuthInfo=socket={folder}/munge/munge.socket", "SlurmUser=root", "SlurmdUser=root",
        f"StateSaveLocation={folder}/state", f"SlurmdSpoolDir={folder}/spool",
        f"SlurmctldPidFile={folder}/slurmctld.pid", f"SlurmdPidFile={folder}/slurmd.pid",
        f"SlurmctldLogFile={folder}/log/slurmctld.log", f"SlurmdLogFile={folder}/log/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "ReturnToService=2",
        "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
        "MpiDefault=none", "SchedulerParameters=sched_interval=1", "MessageTimeout=10", "KillWait=0",
        f"NodeName=localhost CPUs={cpus} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime={MAX_MINUTES} State=UP", ""])


def log_tail(path: Path, n: int = 8) -> str:
    """The last lines of a daemon's log (or that it wrote none)."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else f"(no {path.name})"


def stop(pid_file: Path) -> None:
    """Stop the daemon whose pid file this is (SIGTERM, then SIGKILL after 10 s)."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running one-node Slurm on localhost (SLURM_CONF set for this process and the jobs); stopped afterwards,
    its jobs cancelled first, even when a test fails."""
    if os.geteuid() != 0:
        pytest.skip("a Slurm cluster needs root here (slurmd starts the jobs as their user)")
    missing = [p for p in PROGRAMS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]
    if missing:
        pytest.skip(f"Slurm or munge is not installed (missing {missing}): `make slurm` installs Debian's "
                    "slurm-wlm and munge where it runs as root with apt-get")
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("munge", "state", "spool", "log"):
        (folder / sub).mkdir()
    (folder / "munge").chmod(0o755)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder))
    patch = pytest.MonkeyPatch()
    patch.setenv("SLURM_CONF", str(conf))
    munged = [shutil.which("munged") or "/usr/sbin/munged", "--force", f"--key-file={key}",
              f"--socket={folder}/munge/munge.socket", f"--pid-file={folder}/munge/munged.pid",
              f"--log-file={folder}/log/munged.log", f"--seed-file={folder}/munge/munged.seed"]
    daemons = [("munged", munged, folder / "munge" / "munged.pid", folder / "log" / "munged.log"),
               ("slurmctld", ["slurmctld", "-f", str(conf)], folder / "slurmctld.pid", folder / "log/slurmctld.log"),
               ("slurmd", ["slurmd", "-f", str(conf), "-N", "localhost"], folder / "slurmd.pid",
                folder / "log" / "slurmd.log")]
    started: list[Path] = []
    try:
        for name, args, pid_file, log in daemons:
            done = run(args, check=False)
            started.append(pid_file)
            if done.returncode != 0:
                pytest.skip(f"{name} did not start ({done.returncode}): {done.stderr.strip()}\n{log_tail(log)}")
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            state = run(["sinfo", "--noheader", "--format=%T"], check=False).stdout.strip()
            if state == "idle":
                break
            time.sleep(0.5)
        else:
            pytest.skip(f"the node did not become idle in 60 s (sinfo: {state!r}); slurmctld's log:\n"
                        f"{log_tail(folder / 'log/slurmctld.log')}\nslurmd's log:\n{log_tail(folder / 'log/slurmd.log')}")
        yield folder
    finally:
        run(["scancel", "--user", "root"], check=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and run(["squeue", "--noheader"], check=False).stdout.strip():
            time.sleep(0.5)
        for pid_file in reversed(started):
            stop(pid_file)
        patch.undo()


@pytest.fixture
def one_thread():
    """One torch thread here, as in each job (--threads 1): numbers are equal at equal thread counts."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cli_args(params: dict) -> list[str]:
    """--name value ... of a config's parameters."""
    out = []
    for name, value in params.items():
        out += [f"--{name}", *map(str, value)] if isinstance(value, list) else [f"--{name}", str(value)]
    return out


SLURM = ["--dispatch", "slurm", "--slurm_partition", PARTITION, "--slurm_gpus_per_job", "0", "--job_minutes", "5",
         "--threads", "1", "--slurm_poll_seconds", "1", "--slurm_array_parallelism", "2"]


def cancel_after_first_row(shard_glob: str, folder: Path, found: dict) -> None:
    """In a thread: once the shard of array task 1 holds a complete row, kill that task with scancel (found: what
    was done, or the error)."""
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            for shard in folder.glob(shard_glob):
                if shard.read_text().endswith("\n"):
                    tasks = run(["squeue", "--noheader", "--array", "--format=%i"]).stdout.split()
                    task = next((t for t in tasks if t.endswith("_1")), None)
                    if task is not None:
                        run(["scancel", task])
                    found.update(task=task, tasks=tasks, rows_then=len(shard.read_text().splitlines()))
                    return
            time.sleep(0.1)
        found["error"] = "no row in 240 s"
    except Exception as err:  # noqa: BLE001 - reported by the test's assertion
        found["error"] = repr(err)


def test_tiny_study_on_slurm_equals_one_process_and_a_cancelled_task_reruns_alone(
        slurm_cluster, one_thread, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(study, "study_methods", lambda: ("tecoa",))
    # 4 runs, 2 per array task; task 1's second run trains long enough (about 10 s) to be cancelled mid-way: Slurm
    # kills a cancelled submitit task about 5 s after its SIGTERM here, which the task ignores
    configs = [{"finetune_lr": 1e-3}, {"finetune_lr": 3e-4}, {"finetune_lr": 1e-4},
               {"finetune_lr": 3e-5, "finetune_steps": 100}]
    monkeypatch.setattr(study, "search_space", lambda **_: {"tecoa": configs})
    params = {**STUDY, "stages": ["validation"], "finetune_steps": 4}
    use_cache(monkeypatch, tmp_path / "cache_single")
    single = tmp_path / "single.jsonl"
    assert study_runs.run_study(StudyConfig.from_params(**params), store_path=single, progress=False) == {
        "validation": 4}
    use_cache(monkeypatch, tmp_path / "cache_jobs")
    store = tmp_path / "jobs.jsonl"
    argv = [*cli_args(params), "--store", str(store), *SLURM, "--runs_per_job", "2"]
    with pytest.raises(ConfigError, match=r"Slurm has no partition 'gpu' \(sinfo lists \['tiny'\]\)"):
        study_runs.main([*argv, "--slurm_partition", "gpu"])  # the real sinfo's answer, before any work
    with pytest.raises(ConfigError, match=r"above the time limit of partition 'tiny' \(10 minutes\)"):
        study_runs.main([*argv, "--job_minutes", "11"])
    assert not list(tmp_path.glob("jobs.*"))
    found: dict = {}
    watcher = threading.Thread(target=cancel_after_first_row, args=("*-validation-0001.jsonl",
                                                                     dispatch.shard_dir(store), found), daemon=True)
    watcher.start()
    code = study_runs.main([*argv, "--calibration", "here"])  # 2 array tasks, task 1 cancelled after 1 run
    watcher.join(timeout=10)
    out = capsys.readouterr().out
    assert found.get("task") and found["rows_then"] == 1, f"task 1 was not cancelled after its first row: {found}"
    assert code == 1
    assert "1 of 2 jobs failed" in out and f"job {found['task']} ended without a result" in out, out
    assert len(study.StudyStore(store).rows()) == 3  # runs 0, 1 (task 0) and 2 (task 1's first), in plan order
    assert dispatch.shard_status(study.StudyStore(store)) == {"shard_files": 0, "shard_rows": 0}
    # the rerun submits one task with the run the cancelled task did not finish, then merges it
    assert study_runs.main(argv) == 0
    done = json.loads(capsys.readouterr().out.splitlines()[-1])["computed"]
    assert done == {"validation": {"computed": 1, "merged": 1, "pending": 0, "missing": 0}}
    assert lines(store) == lines(single)  # row for row, number for number, in plan order
    logs = sorted(dispatch.job_folder(store, dispatch.DispatchConfig()).rglob("*_log.err"))
    assert len(logs) == 3  # the first array's 2 tasks and the rerun's 1, each with its log under <store>.jobs


def test_tiny_grid_on_slurm_equals_one_process(slurm_cluster, one_thread, monkeypatch, tmp_path, capsys):
    params = {**GRID, "datasets": ["shapes"]}
    cfg = EvaluationConfig.from_params(**params)
    use_cache(monkeypatch, tmp_path / "cache_single")
    single = grid_runs.evaluate_models(cfg, cfg.models, store_path=tmp_path / "single.jsonl", progress=False)
    assert single.computed == 4  # 1 dataset x 2 models x (clean, PGD-10 at 1/255)
    use_cache(monkeypatch, tmp_path / "cache_jobs")
    store = tmp_path / "jobs.jsonl"
    assert grid_runs.main([*cli_args(params), "--store", str(store), *SLURM]) == 0  # one array task per model
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {
        "computed": 4, "merged": 4, "replaced": 0, "pending": 0, "store": str(store), "shard_files": 0,
        "shard_rows": 0}
    assert lines(store) == lines(single.path)
    assert set(grid.open_store(store).runs()) == {r["run"] for r in grid.open_store(store).rows()}
