"""Dispatched jobs (nbhelpers.dispatch): 06's study and 05's grid run as submitit jobs (worker processes here, a
mocked Slurm array) fill their stores exactly as a single process does, and a failed job's rerun computes only
what is missing."""
from __future__ import annotations

import copy
import json
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
    options = DispatchConfig.from_params(dispatch="slurm", slurm_partition="gpu", slurm_gpus_per_job=1,
                                         slurm_array_parallelism=1, job_minutes=30,
                                         slurm_setup=["source .venv/bin/activate"])
    real_collect = dispatch.collect_jobs
    seen = {}
    with slurm_test.mocked_slurm() as mock:
        def run_then_collect(jobs, names, **kw):  # the cluster runs each array task, then the parent collects
            seen["sbatch"] = [p.read_text() for p in dispatch.job_folder(tmp_path / "s.jsonl", options).rglob("*.sh")]
            for job in jobs:
                with mock.job_context(job.job_id):
                    submission.process_job(job.paths.folder)
                mock.set_job_state(job.job_id, "COMPLETED")
            return real_collect(jobs, names, **{**kw, "poll_seconds": 0.01})
        monkeypatch.setattr(dispatch, "collect_jobs", run_then_collect)
        done = study_runs.dispatch_study(cfg, options, store_path=tmp_path / "s.jsonl", progress=False)
    assert len(set(seen["sbatch"])) == 1  # one job array (its sbatch file beside each task)
    for flag in ("--partition=gpu", "--array=0-1%1", "--gpus-per-node=1", "--time=30", "source .venv/bin/activate"):
        assert flag in seen["sbatch"][0]
    assert done == {"validation": {"computed": 2, "merged": 2, "pending": 0, "missing": 0}}
    rows = study.StudyStore(tmp_path / "s.jsonl").rows()
    assert [r["overrides"]["finetune_lr"] for r in rows] == [1e-3, 3e-4]  # plan order


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
