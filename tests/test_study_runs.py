"""Notebook 06's runner: every study method and ablation trains and evaluates through the one engine and runner,
stages resume from the store, rows made by other code are never used, 04 and 05 take the selected configurations."""
from __future__ import annotations

import functools
import json

import pytest

from nbhelpers import evaluation, methods, paper_data, paths, study, study_runs, training, world
from nbhelpers.config import ConfigError, EvaluationConfig, StudyConfig, TAINotebookConfig
from nbhelpers.utils import unpack_mask

TINY = dict(finetune_steps=2, warmup_steps=1, train_batch_size=16, val_images=8, test_images=8, strong_images=4,
            ablation_images=4, iat_steps=2, iat_images=16, batch_size=16, pgd_steps=1, train_seeds=[0, 1],
            strong_seeds=[0], strong_methods=["tima"], device="cpu")


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A tiny study: one configuration per method, two ablations (a TAI and an IAT variant), weights in tmp_path."""
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(study, "ABLATIONS", {k: study.ABLATIONS[k] for k in ("margin_tam_sample", "iat_full")})
    # speed only: a 256-image training pool per seed and each evaluation set rendered once (same images)
    monkeypatch.setattr(training, "_mini_train_pool", functools.lru_cache(maxsize=4)(
        lambda task, seed: world.generate_task(task, 256, split="train", seed=seed)))
    monkeypatch.setattr(evaluation, "load_eval_set", functools.lru_cache(maxsize=16)(evaluation.load_eval_set))
    monkeypatch.setattr(study, "search_space", lambda **_: {m: [{"finetune_lr": 1e-3}] for m in study.study_methods()})
    return StudyConfig.from_params(**TINY), tmp_path / "06_study.jsonl"


@pytest.mark.parametrize("params, message", [
    (dict(profile="paper", train_task="cifar10"), "fine-tunes on tinyimagenet"),
    (dict(profile="paper", stages=["selection"]), "unknown stage"),
    (dict(stages=["selection"]), "unknown stage"),
    (dict(strong_seeds=[3]), "must be among train_seeds"),
    (dict(train_seeds=[0, 0]), "distinct seeds"),
    (dict(test_images=10**6), "<= "),
    (dict(clean_tolerance=2.0), "fraction"),
])
def test_bad_study_parameters_fail_before_any_work(params, message):
    with pytest.raises(ConfigError, match=message):
        StudyConfig.from_params(**params)


def test_paper_study_selects_on_the_validation_datasets_and_reports_the_sixteen():
    """The paper profile: TinyImageNet's held-out val split and the four validation datasets select; the 16 reported
    datasets are the test tasks; the lr grid is the paper's; the mini profile is unchanged."""
    cfg = StudyConfig.from_params(profile="paper", val_images=1000, test_images=5000)  # no mini pool limits
    assert cfg.validation_datasets() == ["tinyimagenet", "gtsrb", "svhn", "fer2013", "country211"]
    assert cfg.test_datasets() == paper_data.list_paper_datasets() and len(cfg.test_datasets()) == 16
    assert not set(cfg.validation_datasets()[1:]) & set(cfg.test_datasets())
    space = study.search_space(profile=cfg.profile, finetune_steps=cfg.finetune_steps)
    lrs = {c["finetune_lr"] for configs in space.values() for c in configs if "warmup_steps" in c}
    assert lrs == set(study.LR_GRID["paper"])
    assert study_runs.stage_evaluation(cfg, "validation")["tasks"] == cfg.validation_datasets()
    assert StudyConfig().validation_datasets() == list(world.VALIDATION_TASKS)
    assert StudyConfig().test_datasets() == list(world.ZERO_SHOT_TASKS)
    with pytest.raises(ConfigError, match="val_images"):  # the mini pool checks stay for mini
        StudyConfig.from_params(val_images=world.VAL_POOL + 1)


def test_unknown_strong_method_fails_before_any_work(tmp_path):
    cfg = StudyConfig.from_params(strong_methods=["tima", "tecoa_xl"])
    with pytest.raises(ValueError, match="tecoa_xl"):
        study_runs.run_study(cfg, store_path=tmp_path / "s.jsonl")
    assert not (tmp_path / "s.jsonl").exists()


def test_later_stages_need_the_selection(tmp_path):
    cfg = StudyConfig.from_params(stages=["test"])
    with pytest.raises(RuntimeError, match="validation stage"):
        study_runs.stage_configs(cfg, study.StudyStore(tmp_path / "s.jsonl"), "test")


def test_tiny_study_runs_every_stage_resumes_and_ignores_other_code(tiny, monkeypatch):
    cfg, store_path = tiny
    done = study_runs.run_study(cfg, store_path=store_path, progress=False)
    n_ablation, n_methods = len(study.ABLATIONS) + len(study.ABLATION_REFERENCES), len(study.study_methods())
    assert n_methods == 7  # tecoa, pmg_aft, pmg_aft_code, laat, fare, tai, tima
    assert done == {"validation": n_methods, "test": 2 * n_methods, "strong": 1, "ablation": 2 * n_ablation}
    rows = [json.loads(line) for line in store_path.read_text().splitlines()]
    val = [r for r in rows if r["stage"] == "validation"]
    assert {tuple(r["evaluation"]["tasks"]) for r in val} == {tuple(cfg.validation_datasets())}
    assert all(0 <= v <= 1 for r in rows for v in r["scores"].values())
    test = [r for r in rows if r["stage"] == "test"]
    assert set(test[0]["scores"]) >= {"clean", "robust@1", "robust@8", "robust@4/shapes"}
    strong = [r for r in rows if r["stage"] == "strong"]
    assert all(r["scores"]["aa@4"] <= r["scores"]["robust@4"] + 0.25 for r in strong)
    # strong rows keep each image's correctness, and it re-scores to the stored accuracies
    for r in strong:
        for metric in ("robust@4", "aa@4"):
            per_task = [unpack_mask(r["per_sample"][f"{metric}/{t}"], r["evaluation"]["n"]).mean()
                        for t in r["evaluation"]["tasks"]]
            assert per_task == pytest.approx([r["scores"][f"{metric}/{t}"] for t in r["evaluation"]["tasks"]])
    assert all("per_sample" not in r for r in rows if r["stage"] != "strong")
    iat = [r for r in rows if r["method"] == "iat_full"]
    assert iat and all("original_text:robust@4" in r["scores"] for r in iat)
    # seed 0 of the test stage reuses the selection run's weights: same scores on the same images
    assert study_runs.run_study(cfg, store_path=store_path, progress=False) == {s: 0 for s in study.STAGES}
    status = study_runs.store_status(cfg, store_path=store_path).set_index("stage")
    assert (status.expected == status.current).all() and (status.other == 0).all()
    # the replication comparison: the store against itself agrees everywhere; a replica that lacks the strong
    # stage says so for the masking verdict and agrees on the rest
    replica = store_path.with_name("replica.jsonl")
    replica.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows if r["stage"] != "strong"))
    selection, verdicts = study_runs.compare_replication(cfg, store_path=store_path, replica_path=store_path)
    assert selection.same.all() and verdicts["same verdict"].all()
    own = study_runs.store_findings(cfg, store_path=store_path, replica_path=None)  # the store alone decides
    assert [v.split(" (")[0] for v in verdicts.study] == [f"{f.verdict}: " + study_runs.format_interval(
        f.estimate, f.ci_low, f.ci_high, scale=1, signed=True) for f in own]
    shown = verdicts.drop(index="06_no_gradient_masking")  # tiny: TIMA checked without TeCoA, nothing to pool
    assert shown.pooled.str.contains(r"\(9\d\.\d%\)").all()  # every scope shows its Holm level
    _, verdicts = study_runs.compare_replication(cfg, store_path=store_path, replica_path=replica)
    assert verdicts.loc["06_no_gradient_masking", "replica"] == "not in the store"
    assert not verdicts.loc["06_no_gradient_masking", "same verdict"]
    # the rest is in both (the two Holm families now differ in size, so their levels may differ)
    assert not verdicts.drop(index="06_no_gradient_masking").replica.str.contains("not in the store").any()
    # rows computed by other code are not this code's: they count as 'other' and would be recomputed
    monkeypatch.setattr(study_runs, "numerics_fingerprint", lambda: "0123456789ab")
    status = study_runs.store_status(cfg, store_path=store_path).set_index("stage")
    assert status.loc["validation", "current"] == 0 and status.loc["validation", "other"] == n_methods
    with pytest.raises(FileNotFoundError, match="make study"):
        study_runs.selected_configurations(cfg, store_path=store_path)


def test_iat_tecoa_takes_tecoas_configuration_and_timas_consistency_weight():
    selected = {"tecoa": {"finetune_lr": 3e-4, "warmup_steps": 0}, "tima": {"finetune_lr": 1e-4, "sc_weight": 1.0}}
    assert methods.selected_overrides("iat_tecoa", selected) == {"finetune_lr": 3e-4, "warmup_steps": 0,
                                                                 "sc_weight": 1.0}
    assert methods.selected_overrides("tima", selected) == selected["tima"]
    assert methods.selected_overrides("zero_shot", selected) == {}


def test_configs_parameter_of_04_and_05():
    assert TAINotebookConfig().uses_selection() and EvaluationConfig().uses_selection()
    assert not EvaluationConfig.from_params(configs="knobs").uses_selection()
    assert not EvaluationConfig.from_params(profile="paper", configs="knobs").uses_selection()
    assert not EvaluationConfig.from_params(profile="paper", models=["zero_shot"]).uses_selection()  # trains nothing
    with pytest.raises(ConfigError, match="no study selection"):  # auto on paper: no selection, mini knobs
        EvaluationConfig.from_params(profile="paper")
    with pytest.raises(ConfigError, match="no study selection"):
        TAINotebookConfig.from_params(profile="paper")
    with pytest.raises(ConfigError, match="needs the mini profile"):
        EvaluationConfig.from_params(profile="paper", configs="selected").uses_selection()
    with pytest.raises(ConfigError, match="configs"):
        EvaluationConfig.from_params(configs="best")


def test_committed_study_store_is_made_by_this_code_and_holds_every_stage():
    """results/06_study.jsonl holds every row notebook 06 renders (the whole search, every seed of the selected
    models, the AutoAttack check and the ablations) and the selections of 04 and 05, all computed by the current
    code (the code fingerprint is in every row's key): editing a module that trains or evaluates makes this fail
    until `make study` has recomputed the store."""
    cfg = StudyConfig()
    status = study_runs.store_status(cfg).set_index("stage")
    assert (status.current == status.expected).all(), status
    assert (status.other == 0).all(), status
    strong = study_runs.current_rows(study.StudyStore(study_runs.STORE_PATH), cfg, "strong")
    assert all(r.get("per_sample") for r in strong), "strong rows must keep per-image correctness"
    assert set(study_runs.selected_configurations()) == set(study.study_methods())


def test_notebook_06_refuses_the_paper_profile_before_any_work():
    cfg = StudyConfig.from_params(profile="paper", rerun=False)
    with pytest.raises(ValueError, match="command line"):
        study_runs.check_notebook_config(cfg)
    study_runs.check_notebook_config(StudyConfig.from_params())
