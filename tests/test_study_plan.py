"""Planning notebook 06's study before it trains (`python -m nbhelpers.study_runs --plan`): every run it would make,
and device time estimated from a calibration measured on the machine at hand. The plan writes nothing and trains
nothing beyond the calibration's few steps."""
from __future__ import annotations

import dataclasses
import functools
import json
import math

import pandas as pd
import pytest

from nbhelpers import methods, paper_data, paths, study, study_runs, training, world
from nbhelpers.config import StudyConfig
from nbhelpers.paper_data import SKIP_CHECKSUMS_ENV
from paper_fixtures import write_fixture, write_paper_root

SMALL = dict(finetune_steps=20, warmup_steps=1, train_batch_size=16, batch_size=16, val_images=8, test_images=8,
             strong_images=4, ablation_images=4, pgd_steps=2, iat_steps=2, iat_images=16, device="cpu")


def test_the_plan_is_the_committed_study_run_for_run():
    """On the committed store the plan holds exactly the rows the study made (same keys, each stored, nothing to
    do), with the store's selection; weights are trained once per (method, configuration, seed): the test stage's
    seed 0 and the strong stage reuse earlier runs, IAT text is tuned once per text configuration and seed."""
    cfg = StudyConfig()
    plan = study_runs.planned_runs(cfg, store_path=study_runs.STORE_PATH)
    store = study.StudyStore(study_runs.STORE_PATH)
    current = {r["key"] for stage in study.STAGES for r in study_runs.current_rows(store, cfg, stage)}
    assert set(plan.key) == current and len(plan) == len(current) and plan.stored.all()
    assert plan.attrs["selection"] == "from the store"
    counts = plan.groupby("stage", sort=False).size().to_dict()
    n_seeds = len(cfg.train_seeds)
    assert counts == {"validation": len(study.study_methods()) * study.BUDGET, "test": len(study.study_methods()) * n_seeds,
                      "strong": len(cfg.strong_methods) * len(cfg.strong_seeds),
                      "ablation": (len(study.ABLATIONS) + len(study.ABLATION_REFERENCES)) * n_seeds}
    selected = study_runs.selected_configurations(cfg)
    test = plan[plan.stage == "test"]
    assert set(test.config) == {study.config_id(c) for c in selected.values()}
    assert not test[test.train_seed == cfg.train_seeds[0]].trains.any() and test[test.train_seed != 0].trains.all()
    assert not plan[plan.stage == "strong"].trains.any()
    ablation = plan[plan.stage == "ablation"]
    assert ablation.trains.tolist() == [m in study.ABLATIONS for m in ablation.method]
    tima = plan[(plan.method == "tima") & (plan.stage == "validation")]
    assert tima.tunes_text.sum() == 3 and (tima.text_sides == 2).all()  # one IAT tuning per sc_weight
    assert not plan[plan.method == "iat_full"].tunes_text.any()  # TIMA's selected IAT text, tuned already
    assert study_runs.plan_summary(plan).set_index("stage").loc["total", "to do"] == 0


def test_mini_plan_from_a_measured_calibration_writes_nothing(monkeypatch, tmp_path):
    """plan_study times each engine method's training step, IAT and the attacks on this CPU, then extrapolates
    (steps x step time + images x attack cost); it writes no store and no cache entry."""
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(training, "_mini_train_pool", functools.lru_cache(maxsize=4)(  # speed only: a small pool
        lambda task, seed: world.generate_task(task, 256, split="train", seed=seed)))
    cfg = StudyConfig.from_params(**SMALL)
    store = tmp_path / "06_study.jsonl"
    plan = study_runs.plan_study(cfg, device="cpu", store_path=store, train_steps=1)
    assert not store.exists() and not (tmp_path / "cache").exists()
    cal = plan.attrs["calibration"]
    assert set(cal["train_step_seconds"]) == {methods.get(study.trained_as(m)).engine
                                              for m in [*study.study_methods(), *study.ABLATIONS]}
    assert all(v > 0 for v in cal["train_step_seconds"].values()) and cal["train_data"] == "memory"
    assert cal["forward_seconds"] > 0 and cal["gradient_seconds"] > 0 and cal["iat_step_seconds"] > 0
    assert cal["load_dataset"] == cfg.validation_datasets()[0] and cal["load_seconds"] >= 0
    row = plan[(plan.stage == "validation") & (plan.method == "pmg_aft")].iloc[0]
    assert row.train_seconds == pytest.approx(cfg.finetune_steps * cal["train_step_seconds"]["pmg_aft"])
    per_image = (cal["forward_seconds"] + cfg.pgd_steps * cal["gradient_seconds"] + cal["forward_seconds"]
                 + cal["load_seconds"])
    assert row.eval_seconds == pytest.approx(3 * cfg.val_images * per_image + 3 * cal["open_seconds"])
    strong = plan[plan.stage == "strong"].iloc[0]
    assert strong.train_seconds == 0 and strong.eval_seconds > 5 * 4 * study_runs.AA_GRADIENT_STEPS * cal[
        "gradient_seconds"]
    half = study_runs.estimate_plan(plan, cfg, study_runs.StudyCalibration(**cal), aa_fraction=0.5)
    assert (half.eval_seconds[plan.stage == "strong"] < plan.eval_seconds[plan.stage == "strong"]).all()
    summary = study_runs.plan_summary(plan).set_index("stage")
    assert summary.loc["total", "hours"] == pytest.approx(
        (plan.seconds.sum() + plan.attrs["setup_seconds"]) / 3600, abs=2e-3)
    # 116 with the seven studied methods (105 before pmg_aft_code): a studied method trains its 9 validation
    # configurations and 2 more test seeds (seed 0 reuses its selection run)
    assert summary.loc["total", "trainings"] == plan.trains.sum() == 116
    with pytest.raises(ValueError, match="calibrate them"):
        study_runs.estimate_plan(plan, cfg, study_runs.StudyCalibration(**{**cal, "train_step_seconds": {}}))


def test_plan_cli_prints_every_run_and_the_estimate(monkeypatch, tmp_path, capsys):
    """--plan prints the calibration, one line per run and the device-hours; a paper study may not use the committed
    mini stores, and its data is checked before any work."""
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(training, "_mini_train_pool", functools.lru_cache(maxsize=4)(
        lambda task, seed: world.generate_task(task, 256, split="train", seed=seed)))
    flags = [f"--{k}={v}" for k, v in SMALL.items()]
    store = tmp_path / "s.jsonl"
    assert study_runs.main(["--plan", "--plan_steps", "1", "--stages", "validation", "test", "--store", str(store),
                            "--save_calibration", str(tmp_path / "cal.json"), *flags]) == 0
    out = capsys.readouterr().out
    assert "calibration on cpu (mini-clip at 32 px" in out and "estimated device-hours on cpu:" in out
    cal = study_runs.load_calibration(str(tmp_path / "cal.json"), StudyConfig())  # for --calibration
    assert cal.device == "cpu" and set(cal.train_step_seconds) == set(study_runs._engine_methods())
    runs = [line for line in out.splitlines() if line.split()[:1] in (["validation"], ["test"])]
    assert len(runs) == len(study.study_methods()) * (9 + 3) + 2  # every run, and the summary's two stage lines
    assert not store.exists() and not (tmp_path / "cache").exists()
    with pytest.raises(SystemExit, match="06_study_paper.jsonl"):
        study_runs.main(["--profile", "paper", "--stages", "validation"])
    with pytest.raises(SystemExit, match="06_study_paper.jsonl"):  # pruning would drop every mini row
        study_runs.main(["--profile", "paper", "--status", "--prune"])
    with pytest.raises(ValueError, match="aa_fraction"):
        study_runs.main(["--plan", "--plan_aa_fraction", "2", "--store", str(store), *flags])
    with pytest.raises(FileNotFoundError, match=r"gtsrb(.|\n)*country211"):
        study_runs.main(["--profile", "paper", "--pretrained", "none", "--data_root", str(tmp_path / "none"),
                         "--store", str(store)])
    assert not store.exists()


@pytest.fixture(scope="module")
def paper_root(tmp_path_factory):
    """A data root with TinyImageNet (train and val, 2 classes), CIFAR-10 and the four validation datasets."""
    root = write_paper_root(tmp_path_factory.mktemp("paper") / "data", cifar_test=8, tiny_classes=2,
                            tiny_train_per_class=2, tiny_val_per_class=2)
    for name in paper_data.list_validation_datasets():
        write_fixture(name, root)
    return root


def test_paper_plan_calibrates_vit_b32_on_the_fixtures(paper_root, monkeypatch, tmp_path):
    """The paper profile: random ViT-B/32 weights, the fine-tuning set read from disk (its loading timed with the
    steps), the validation datasets and the 16 reported ones in the runs, the paper's lr grid in the configurations."""
    monkeypatch.setenv(SKIP_CHECKSUMS_ENV, "1")
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    cfg = StudyConfig.from_params(profile="paper", model="ViT-B-32", pretrained="none", data_root=str(paper_root),
                                  device="cpu", batch_size=2, train_batch_size=2, finetune_steps=3900, pgd_steps=1,
                                  iat_images=2, val_images=1000, test_images=1000)
    # one engine timed here (TAI: student, frozen teacher, margins); the mini test times every engine
    cal = study_runs.calibrate_study(cfg, device="cpu", train_steps=1, warmup=0, attack_steps=1, engines=["tai"])
    assert (cal.model, cal.image_size, cal.train_data, cal.n_classes) == ("ViT-B-32", 224, "disk", 2)
    assert cal.load_dataset == "tinyimagenet" and cal.load_seconds >= 0 and cal.gradient_seconds > 0
    assert set(cal.train_step_seconds) == {"tai"} and cal.train_step_seconds["tai"] > 0
    with pytest.raises(ValueError, match="calibrate them"):
        study_runs.plan_study(cfg, calibration=cal)
    cal = dataclasses.replace(cal, train_step_seconds={e: cal.train_step_seconds["tai"] for e in
                                                       ("tecoa", "pmg_aft", "pmg_aft_code", "laat", "fare", "tai")})
    plan = study_runs.plan_study(cfg, calibration=cal)
    assert not (tmp_path / "cache").exists()
    val = plan[plan.stage == "validation"]
    assert set(val.datasets) == {"tinyimagenet, gtsrb, svhn, fer2013, country211"} and (val.images == 1000).all()
    assert set(plan[plan.stage == "test"].datasets) == {", ".join(paper_data.list_paper_datasets())}
    lrs = {json.loads(c)["finetune_lr"] for c in val[val.method == "tecoa"].config}
    assert lrs == set(study.LR_GRID["paper"])
    assert plan.seconds.map(math.isfinite).all() and (plan.seconds > 0).all()
    tecoa = val[val.method == "tecoa"].iloc[0]
    assert tecoa.train_seconds == pytest.approx(3900 * cal.train_step_seconds["tecoa"])
    assert isinstance(study_runs.plan_summary(plan), pd.DataFrame)
    text = study_runs.format_plan(plan, profile="paper")
    assert "ViT-B-32 at 224 px" in text and "country211" in text and "estimated device-hours on cpu" in text
