"""Dispatched jobs (nbhelpers.dispatch): 06's study and 05's grid run as submitit jobs (worker processes here, a
mocked Slurm array) fill their stores exactly as a single process does, and a failed job's rerun computes only
what is missing."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import warnings

import pytest
import torch

from nbhelpers import dispatch, grid, grid_runs, paths, study, study_runs
from nbhelpers.config import ConfigError, DispatchConfig, EvaluationConfig, StudyConfig
from nbhelpers.store import JsonlStore

BOOKKEEPING = {"seconds", "run"}  # differ between any two runs: time taken, 05's run stamp (when, where, which process)
STUDY = dict(finetune_steps=2, warmup_steps=1, train_batch_size=16, val_images=8, test_images=8, batch_size=16,
             pgd_steps=1, iat_steps=2, iat_images=16, train_seeds=[0, 1, 2], strong_seeds=[0],
             strong_methods=["tecoa"], stages=["validation", "test"], device="cpu")
GRID = dict(models=["zero_shot", "tecoa"], datasets=["shapes", "colours"], include_finetune_set=False,
            eps_list=[1.0], attacks=["pgd10"], strong_attacks=[], strong_eps_list=[], n_samples=8, n_strong=8,
            configs="knobs", finetune_steps=2, warmup_steps=1, train_batch_size=16, batch_size=16, device="cpu")


SINFO = ["debug*|up|30:00|(null)|localhost", "gpu|up|2-00:00:00|gpu:4|localhost",
         "remote|up|infinite|gpu:8|gpu-node-[01-02]", "closed|down|infinite|(null)|localhost"]  # sinfo's %P|%a|%l|%G|%N


def fake_slurm(monkeypatch, folder, lines=SINFO) -> None:
    """sinfo (printing `lines`) and scontrol show hostnames (expanding gpu-node-[01-02]) on PATH, nothing else of
    Slurm's: the checks before submission read a cluster that is not there."""
    folder.mkdir(exist_ok=True)
    (folder / "sinfo").write_text("#!/bin/sh\ncat <<'EOF'\n" + "\n".join(lines) + "\nEOF\n")
    (folder / "scontrol").write_text('#!/bin/sh\n[ "$3" = "gpu-node-[01-02]" ] && echo gpu-node-01 gpu-node-02 '
                                     '|| echo "$3"\n')
    for f in ("sinfo", "scontrol"):
        (folder / f).chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def lines(path) -> list[dict]:
    """A store's rows as stored, in file order, without the bookkeeping fields."""
    return [{k: v for k, v in json.loads(line).items() if k not in BOOKKEEPING} for line in path.read_text().splitlines()]


def use_cache(monkeypatch, folder) -> None:
    """Trained weights go to `folder`, here and in the worker processes (which read TIMA_CACHE_DIR)."""
    monkeypatch.setattr(paths, "CACHE_DIR", folder)
    monkeypatch.setenv("TIMA_CACHE_DIR", str(folder))


@pytest.fixture
def one_method_study(monkeypatch):
    """06's study reduced to TeCoA with one configuration (the workers need no patch: they get their runs)."""
    monkeypatch.setattr(study, "study_methods", lambda: ("tecoa",))
    monkeypatch.setattr(study, "search_space", lambda **_: {"tecoa": [{"finetune_lr": 1e-3}]})
    return StudyConfig.from_params(**STUDY)


@pytest.mark.parametrize("params, message", [
    (dict(dispatch="cluster"), "'dispatch' = 'cluster' is not allowed"),
    (dict(dispatch="local", workers=0), "'workers' must be > 0"),
    (dict(dispatch="local", gpus=[0, 0]), "distinct GPU indices"),
    (dict(dispatch="slurm", gpus=[0]), "'gpus' is for dispatch 'local'"),
    (dict(dispatch="local", slurm_partition="gpu"), r"\['slurm_partition'\] are for dispatch 'slurm'"),
    (dict(dispatch="slurm", slurm_mem_gb=-1.0), "'slurm_mem_gb' must be >= 0"),
])
def test_bad_dispatch_options_fail_before_any_work(params, message):
    with pytest.raises(ConfigError, match=message):
        DispatchConfig.from_params(**params)


def test_clis_refuse_bad_dispatch_options_before_any_work(tmp_path, capsys):
    for main in (study_runs.main, grid_runs.main):
        with pytest.raises(SystemExit) as exit_info:  # a usage error, as argparse's own
            main(["--dispatch", "local", "--slurm_partition", "gpu", "--store", str(tmp_path / "s.jsonl")])
        assert exit_info.value.code == 2 and "are for dispatch 'slurm'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_slurm_time_limits_read_as_minutes():
    assert [dispatch.slurm_minutes(t) for t in ("infinite", "30", "5:30", "1:00:00", "1-00:00:00", "2-12",
                                                  "1-02:30")] == [None, 30, 5, 60, 1440, 3600, 1590]


@pytest.mark.parametrize("flags, message", [
    (["--slurm_partition", "nope"], r"Slurm has no partition 'nope' \(sinfo lists \['closed', 'debug', 'gpu', 'remote'\]\)"),
    (["--slurm_partition", "closed"], "partition 'closed' is not up"),
    (["--slurm_gpus_per_job", "0", "--job_minutes", "31"], r"above the time limit of partition 'debug' \(30 minutes\)"),
    (["--job_minutes", "30"], r"asks partition 'debug' for GPUs, and its nodes offer none"),  # the default partition, one GPU by default
    (["--slurm_partition", "remote"], r"filesystem that only this machine sees, and partition 'remote' runs its "
                                      r"jobs on \['gpu-node-01', 'gpu-node-02'\]"),
])
def test_slurm_submission_refuses_what_the_cluster_would_before_any_work(flags, message, monkeypatch, tmp_path):
    fake_slurm(monkeypatch, tmp_path / "bin")
    if "remote" in flags and dispatch.filesystem_type(tmp_path) not in dispatch.LOCAL_FILESYSTEMS:
        pytest.skip(f"{tmp_path} is on a {dispatch.filesystem_type(tmp_path)!r} filesystem, which may be shared")
    store = tmp_path / "out" / "s.jsonl"
    (tmp_path / "out").mkdir()
    for main in (study_runs.main, grid_runs.main):
        with pytest.raises(ConfigError, match=message):
            main(["--dispatch", "slurm", *flags, "--store", str(store)])
    assert not list((tmp_path / "out").iterdir())  # nothing submitted, nothing written


def test_slurm_submission_says_when_sinfo_is_missing(monkeypatch, tmp_path):
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no Slurm command at all
    with pytest.raises(ConfigError, match="needs Slurm's sinfo on PATH, and it is not there"):
        grid_runs.main(["--dispatch", "slurm", "--store", str(tmp_path / "s.jsonl")])
    assert [p.name for p in tmp_path.iterdir()] == ["bin"]


@pytest.mark.parametrize("store", ["a_file/s.jsonl", "/proc/s.jsonl"])
def test_slurm_submission_refuses_a_store_folder_it_cannot_write(store, monkeypatch, tmp_path):
    fake_slurm(monkeypatch, tmp_path / "bin")
    (tmp_path / "a_file").write_text("not a folder")
    path = store if store.startswith("/") else str(tmp_path / store)
    with pytest.raises(ConfigError, match=r"the store's shard folder .* cannot be written"):
        grid_runs.main(["--dispatch", "slurm", "--slurm_gpus_per_job", "0", "--job_minutes", "30", "--store", path])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "bin"]


def test_slurm_study_refuses_jobs_longer_than_their_calibrated_runs(one_method_study, monkeypatch, tmp_path, capsys):
    """A calibration (--plan --save_calibration) with 60 s per training step: a 2-step TeCoA run takes over 2 minutes,
    so 2-minute jobs are refused before anything is submitted; 3-minute jobs pass that check."""
    fake_slurm(monkeypatch, tmp_path / "bin")
    cal = study_runs.StudyCalibration("cpu", "mini", 32, 16, 16, {"tecoa": 60.0}, "memory", 4, 0.01, 1e-4, 1e-4,
                                      1e-4, 0.0, "shapes", 1.0)
    (tmp_path / "cal.json").write_text(json.dumps(dataclasses.asdict(cal)))
    store = tmp_path / "out" / "s.jsonl"
    (tmp_path / "out").mkdir()
    argv = ["--store", str(store), "--stages", "validation", "--finetune_steps", "2", "--dispatch", "slurm",
            "--slurm_gpus_per_job", "0", "--strong_methods", "tecoa", "--calibration", str(tmp_path / "cal.json")]
    with pytest.raises(ConfigError, match=r"job 0 of 1 is estimated at 2\.0 minutes \(calibration on cpu\), longer "
                                          "than --job_minutes 1"):
        study_runs.main([*argv, "--job_minutes", "1"])
    assert not list((tmp_path / "out").iterdir())
    seconds = study_runs.job_seconds(one_method_study.replace(stages=["validation"]),
                                     DispatchConfig.from_params(dispatch="slurm", runs_per_job=1), cal,
                                     store_path=store)
    assert len(seconds) == 1 and 120 < seconds[0] < 121  # 2 steps x 60 s, plus the evaluation's fraction of a second
    with pytest.raises(SystemExit) as exit_info:  # a usage error, as argparse's own
        study_runs.main(["--store", str(store), "--calibration", "here"])
    assert exit_info.value.code == 2 and "--calibration is for --dispatch slurm" in capsys.readouterr().err


def test_work_is_split_round_robin_locally_and_in_chunks_on_slurm():
    runs = list(range(7))
    assert dispatch.split_work(runs, DispatchConfig.from_params(dispatch="local", workers=3)) == [[0, 3, 6], [1, 4],
                                                                                                 [2, 5]]
    assert dispatch.split_work(runs, DispatchConfig.from_params(dispatch="local", gpus=[2, 5])) == [[0, 2, 4, 6],
                                                                                                  [1, 3, 5]]
    assert dispatch.split_work(runs[:1], DispatchConfig.from_params(dispatch="local", workers=4)) == [[0]]
    assert dispatch.split_work(runs, DispatchConfig.from_params(dispatch="slurm", runs_per_job=3)) == [[0, 1, 2],
                                                                                                      [3, 4, 5], [6]]


def test_shards_merge_in_plan_order_up_to_the_first_missing_run(tmp_path):
    store = JsonlStore(tmp_path / "s.jsonl")
    store.append({"key": "old", "v": 0})
    plan = ["a", "b", "c", "d"]
    position = dispatch.keyed_positions(plan, store)
    first, second = dispatch.new_shards(store.path, 2, tag="t")
    for key in ("c", "a"):  # one job finished c then a; the other finished d and was killed writing its next row
        dispatch.open_shard(store, first).append({"key": key, "v": 1})
    dispatch.open_shard(store, second).append({"key": "d", "v": 1})
    with open(second, "a") as fh:
        fh.write('{"key": "b", "v"')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cut line is ignored, with a warning
        got = dispatch.merge_shards(store, position=position, n=len(plan))
    assert got == {"merged": 1, "replaced": 0, "pending": 2}  # a merged; b missing, so c and d wait in their shards
    assert [r["key"] for r in store.rows()] == ["old", "a"]
    assert len(dispatch.shard_files(store.path)) == 2
    # the rerun computes b alone, into a new shard; now everything merges in plan order and the shards go
    dispatch.open_shard(store, dispatch.new_shards(store.path, 1, tag="t")[0]).append({"key": "b", "v": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = dispatch.merge_shards(store, position=position, n=len(plan))
    assert got == {"merged": 3, "replaced": 0, "pending": 0}
    assert [r["key"] for r in store.rows()] == ["old", "a", "b", "c", "d"]
    assert not dispatch.shard_dir(store.path).exists()


def test_tiny_study_through_local_workers_equals_one_process_and_resumes_after_a_failed_job(
        one_method_study, monkeypatch, tmp_path):
    cfg = one_method_study
    threads = torch.get_num_threads()  # the workers' too: numbers are deterministic for a given thread count
    use_cache(monkeypatch, tmp_path / "cache_single")
    single = tmp_path / "single.jsonl"
    assert study_runs.run_study(cfg, store_path=single, progress=False) == {"validation": 1, "test": 3}
    # the dispatched store starts from the same selection (the validation row); its test stage trains anew
    use_cache(monkeypatch, tmp_path / "cache_jobs")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(single.read_text().splitlines()[0] + "\n")
    # seed 2 is poisoned (an invalid learning rate under its own key): its job writes seed 0's row, then fails
    real_split = dispatch.split_work

    def poisoned(items, options):
        return [[(k, s, m, {**o, "finetune_lr": -1.0} if s == 2 else o) for k, s, m, o in chunk]
                for chunk in real_split(items, options)]
    monkeypatch.setattr(dispatch, "split_work", poisoned)
    options = DispatchConfig.from_params(dispatch="local", workers=2, threads=threads)
    with pytest.raises(dispatch.DispatchError, match="1 of 2 jobs failed"):
        study_runs.dispatch_study(cfg, options, store_path=jobs, progress=False)
    assert [r["train_seed"] for r in study.StudyStore(jobs).rows(stage="test")] == [0, 1]  # plan order: 0, 1 | 2
    monkeypatch.setattr(dispatch, "split_work", real_split)
    # the rerun (here in this process, through the same shards and merge) runs seed 2 alone
    done = study_runs.dispatch_study(cfg, options.replace(dispatch="inline"), store_path=jobs, progress=False)
    assert done == {"validation": {"computed": 0, "merged": 0, "pending": 0, "missing": 0},
                    "test": {"computed": 1, "merged": 1, "pending": 0, "missing": 0}}
    assert lines(jobs) == lines(single)  # row for row, number for number (seeds 0 and 1 trained in workers), in order
    assert not dispatch.shard_dir(jobs).exists()


def test_tiny_grid_through_local_workers_equals_one_process_and_resumes_after_a_failed_job(monkeypatch, tmp_path):
    cfg = EvaluationConfig.from_params(**GRID)
    use_cache(monkeypatch, tmp_path / "cache_single")
    single = grid_runs.evaluate_models(cfg, cfg.models, store_path=tmp_path / "single.jsonl", progress=False)
    assert single.computed == 8  # 2 datasets x 2 models x (clean, PGD-10 at 1/255)
    use_cache(monkeypatch, tmp_path / "cache_jobs")
    path = tmp_path / "jobs.jsonl"
    # zero-shot's job is poisoned (a dataset that does not exist): it fails before its first cell, while TeCoA's job
    # trains and evaluates in its worker
    real_job = grid_runs.GridJob

    def poisoned(job_cfg, models, *args):
        if "zero_shot" in models:
            job_cfg = copy.copy(job_cfg)
            object.__setattr__(job_cfg, "datasets", ("shapes", "no_such_task"))
        return real_job(job_cfg, models, *args)
    monkeypatch.setattr(grid_runs, "GridJob", poisoned)
    options = DispatchConfig.from_params(dispatch="local", workers=2, threads=torch.get_num_threads())
    with pytest.raises(dispatch.DispatchError, match="1 of 2 jobs failed"):
        grid_runs.dispatch_grid(cfg, options, store_path=path, progress=False)
    assert not path.exists()  # plan order starts with zero-shot's cells: TeCoA's 4 wait in their shard
    assert dispatch.shard_status(grid.open_store(path)) == {"shard_files": 1, "shard_rows": 4}
    monkeypatch.setattr(grid_runs, "GridJob", real_job)
    # the rerun (here in this process, through the same shards and merge) computes zero-shot's cells alone
    done = grid_runs.dispatch_grid(cfg, options.replace(dispatch="inline"), store_path=path, progress=False)
    assert done == {"computed": 4, "merged": 8, "replaced": 0, "pending": 0}
    assert lines(path) == lines(single.path)  # TeCoA's rows (trained in a worker) too, number for number, in order
    assert set(grid.open_store(path).runs()) == {r["run"] for r in grid.open_store(path).rows()}  # stamps merged
    assert not dispatch.shard_dir(path).exists()


def test_slurm_array_gets_the_options_and_its_shards_merge(one_method_study, monkeypatch, tmp_path):
    """A Slurm job array with the given options (sbatch mocked by submitit's own test helper); its tasks run here."""
    slurm_test = pytest.importorskip("submitit.slurm.test_slurm")
    submission = pytest.importorskip("submitit.core.submission")
    cfg = one_method_study.replace(stages=["validation"], train_seeds=[0, 1, 2])
    monkeypatch.setattr(study, "search_space", lambda **_: {"tecoa": [{"finetune_lr": 1e-3}, {"finetune_lr": 3e-4}]})
    use_cache(monkeypatch, tmp_path / "cache")
    fake_slurm(monkeypatch, tmp_path / "bin")  # the checks before submission read the partition from sinfo
    options = DispatchConfig.from_params(dispatch="slurm", slurm_partition="gpu", slurm_gpus_per_job=1,
                                         slurm_gpu_flag="gpus_per_task", slurm_account="lab", slurm_array_parallelism=1,
                                         job_minutes=30, slurm_setup=["source .venv/bin/activate"])
    real_collect = dispatch.collect_slurm_jobs
    seen = {}
    with slurm_test.mocked_slurm() as mock:
        def run_then_collect(jobs, names, **kw):  # the cluster runs each array task, then the parent collects
            seen["sbatch"] = [p.read_text() for p in dispatch.job_folder(tmp_path / "s.jsonl", options).rglob("*.sh")]
            for job in jobs:
                with mock.job_context(job.job_id):
                    submission.process_job(job.paths.folder)
                mock.set_job_state(job.job_id, "COMPLETED")
            return real_collect(jobs, names, **{**kw, "poll_seconds": 0.01})
        monkeypatch.setattr(dispatch, "collect_slurm_jobs", run_then_collect)
        done = study_runs.dispatch_study(cfg, options, store_path=tmp_path / "s.jsonl", progress=False)
    assert len(set(seen["sbatch"])) == 1  # one job array (its sbatch file beside each task)
    for flag in ("--partition=gpu", "--array=0-1%1", "--gpus-per-task=1", "--account=lab", "--requeue", "--time=30",
                 "source .venv/bin/activate"):
        assert flag in seen["sbatch"][0]
    assert done == {"validation": {"computed": 2, "merged": 2, "pending": 0, "missing": 0}}
    rows = study.StudyStore(tmp_path / "s.jsonl").rows()
    assert [r["overrides"]["finetune_lr"] for r in rows] == [1e-3, 3e-4]  # plan order


def test_a_requeued_study_task_skips_the_runs_its_shard_holds(one_method_study, tmp_path):
    """Slurm runs a requeued task's job again from the start, with the same shard: the runs already there are not
    trained again (here all of them: no model is even built)."""
    cfg = one_method_study.replace(stages=["validation"])
    evaluation = study_runs.stage_evaluation(cfg, "validation")
    runs = study.plan_missing(study.StudyStore(tmp_path / "s.jsonl"), stage="validation",
                              configs={"tecoa": [{"finetune_lr": 1e-3}]}, train_seeds=[0], evaluation=evaluation)
    shard = tmp_path / "shard.jsonl"
    row = {"key": runs[0][0], "stage": "validation", "method": "tecoa", "overrides": {"finetune_lr": 1e-3},
           "train_seed": 0, "evaluation": evaluation, "scores": {"clean": 0.5}, "seconds": 1.0}
    study.StudyStore(shard, lock=False).append(row)
    before = shard.read_text()
    job = study_runs.StudyJob(cfg, "validation", evaluation, tuple(runs), str(shard))
    assert study_runs.run_study_job(job) == 0
    assert shard.read_text() == before


def test_clis_take_dispatch_flags_and_merge(one_method_study, monkeypatch, tmp_path, capsys):
    """Both CLIs run through 'inline' dispatch (the jobs here, through shards) and --merge computes nothing."""
    use_cache(monkeypatch, tmp_path / "cache")
    store = tmp_path / "s.jsonl"
    argv = ["--store", str(store)]
    for name, value in {**STUDY, "stages": ["validation"]}.items():
        argv += [f"--{name}", *map(str, value)] if isinstance(value, list) else [f"--{name}", str(value)]
    assert study_runs.main([*argv, "--merge"]) == 0  # nothing in shards, nothing computed
    assert not store.exists()
    assert study_runs.main([*argv, "--dispatch", "inline", "--workers", "2"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["computed"]["validation"]["computed"] == 1
    assert len(study.StudyStore(store).rows()) == 1
    grid_store = tmp_path / "g.jsonl"
    assert grid_runs.main(["--models", "zero_shot", "--datasets", "shapes", "--include_finetune_set", "False",
                           "--eps_list", "1", "--strong_attacks", "--strong_eps_list", "--n_samples", "4",
                           "--n_strong", "4", "--batch_size", "16", "--device", "cpu", "--configs", "knobs",
                           "--store", str(grid_store),
                           "--dispatch", "inline"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["computed"] == 2
    assert [r["attack"] for r in grid.load_store(grid_store)[0]] == ["clean", "pgd10"]
