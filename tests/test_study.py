"""The comparison study's parts: validation tasks, equal search budget, declared selection rule, resumable store,
seed statistics (no training: run_config is a fake)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from nbhelpers import findings as F
from nbhelpers import methods, study, world
from nbhelpers.config import EvaluationConfig, IATKnobs, split_overrides
from nbhelpers.utils import pack_mask


# ---------------------------------------------------------------------------------------------- validation tasks
def _label_space(task: str) -> frozenset[str]:
    return frozenset(world.task_spec(task).classnames())


def test_validation_label_spaces_are_disjoint_from_test_and_finetune_tasks():
    reported = [*world.ZERO_SHOT_TASKS, world.FINETUNE_TASK]
    assert len(world.VALIDATION_TASKS) >= 3
    for v in world.VALIDATION_TASKS:
        spec = world.VALIDATION_TASKS[v]
        assert not spec.zero_shot and v not in world.ZERO_SHOT_TASKS and v != world.FINETUNE_TASK
        assert len(_label_space(v)) == len(spec.class_attributes()) >= 2  # class names are unique
        for t in reported:
            assert spec.label_attributes != world.TASKS[t].label_attributes
            assert not _label_space(v) & _label_space(t), (v, t)
        # every validation task labels an attribute no reported task labels (size or background)
        assert set(spec.label_attributes) - {a for t in reported for a in world.TASKS[t].label_attributes}


@pytest.mark.parametrize("task", sorted(world.VALIDATION_TASKS))
def test_validation_tasks_render_deterministically_from_their_own_seed(task):
    x1, y1 = world.generate_task(task, 64, seed=0, split="val")
    x2, y2 = world.generate_task(task, 64, seed=0, split="val")
    x3, y3 = world.generate_task(task, 16, seed=0, split="val")
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:16], x3) and torch.equal(y1[:16], y3)
    assert x1.shape == (64, 3, 32, 32) and float(x1.min()) >= 0 and float(x1.max()) <= 1
    assert int(y1.max()) < len(world.task_spec(task).classnames())
    x4, _ = world.generate_task(task, 64, seed=1, split="val")
    assert not torch.equal(x1, x4)


def test_val_split_images_differ_from_test_and_train_splits():
    # same attributes would give the same classes; the val pool must be its own random stream
    xv, _ = world.generate_task(world.FINETUNE_TASK, 64, seed=0, split="val")
    for split in ("test", "train"):
        xo, _ = world.generate_task(world.FINETUNE_TASK, 64, seed=0, split=split)
        assert (xv - xo).abs().mean() > 0.05
    xs, _ = world.generate_task("size_shapes", 64, seed=0, split="val")
    xt, _ = world.generate_task("shapes", 64, seed=0, split="test")
    assert (xs - xt).abs().mean() > 0.05


def test_size_label_is_rendered():
    # large objects cover more pixels than small ones (the label is visible, not just a name)
    x, y = world.generate_task("size_shapes", 256, seed=0, split="val")
    names = world.task_spec("size_shapes").classnames()
    large = torch.tensor(["large" in names[int(k)] for k in y])
    bg_dist = (x - x[:, :, :1, :1]).abs().sum(1) > 0.3  # pixels unlike the corner (background)
    cover = bg_dist.float().mean((1, 2))
    assert cover[large].mean() > 1.5 * cover[~large].mean()


# ---------------------------------------------------------------------------------------------- search space
def test_search_budget_is_equal_and_every_config_is_valid():
    space = study.search_space()
    assert list(space) == list(study.study_methods())
    assert {len(v) for v in space.values()} == {study.BUDGET} == {9}
    base = EvaluationConfig()
    for method, configs in space.items():
        ids = [study.config_id(c) for c in configs]
        assert len(set(ids)) == len(ids), method  # no configuration counted twice
        for c in configs:
            ft, iat = split_overrides(c)
            cfg = base.finetune_config(methods.get(method).engine, **ft)  # validates the values
            assert all(getattr(cfg, k) == v for k, v in ft.items())
            if iat:
                base.iat_config(**iat)
        if method != "fare":  # 3 lrs x 3 values of one knob
            assert {c["finetune_lr"] for c in configs} == set(study.LR_GRID["mini"])
            knobs = {study.config_id({k: v for k, v in c.items() if k != "finetune_lr"}) for c in configs}
            assert len(knobs) == 3
    fare_lrs = sorted(c["finetune_lr"] for c in space["fare"])
    assert fare_lrs[0] < min(study.LR_GRID["mini"]) and fare_lrs[-1] > max(study.LR_GRID["mini"])
    assert space["tima"][0].keys() - {"finetune_lr"} <= set(IATKnobs.field_names())
    assert space["pmg_aft"][4]["pmg_alpha"] == space["pmg_aft"][4]["pmg_beta"]
    assert {c["warmup_steps"] for c in study.search_space(finetune_steps=1000)["tecoa"]} == {0, 100, 250}
    with pytest.raises(ValueError, match="neither"):
        split_overrides({"finetune_lr": 1e-3, "not_a_knob": 1})


# ---------------------------------------------------------------------------------------------- selection
def _row(method: str, overrides: dict, clean: float, robust: float, seed: int = 0) -> dict:
    return {"key": f"{method}-{study.config_id(overrides)}-{seed}", "stage": "validation", "method": method,
            "overrides": overrides, "train_seed": seed, "scores": {"clean": clean, "robust@4": robust}}


def test_selection_respects_the_clean_constraint_and_breaks_ties_deterministically():
    rows = [
        _row("tecoa", {"finetune_lr": 1e-4}, 0.60, 0.20),
        _row("tecoa", {"finetune_lr": 1e-3}, 0.55, 0.30),  # best robust but 5 points below the best clean
        _row("tecoa", {"finetune_lr": 3e-4}, 0.595, 0.25),  # within 1 point: selected
        _row("pmg_aft", {"finetune_lr": 1e-4}, 0.70, 0.10),
        _row("pmg_aft", {"finetune_lr": 3e-4}, 0.589, 0.90),  # 1.1 points below tecoa's best: not eligible
        _row("pmg_aft", {"finetune_lr": 1e-3}, 0.62, 0.15),
        _row("laat", {"finetune_lr": 1e-4}, 0.62, 0.15),  # tie on robust and clean: config_id decides
        _row("laat", {"finetune_lr": 1e-3}, 0.62, 0.15),
        _row("fare", {"finetune_lr": 1e-4}, 0.40, 0.50),  # none eligible: the highest clean
        _row("fare", {"finetune_lr": 1e-3}, 0.45, 0.05),
    ]
    chosen = study.select(rows)
    assert chosen["tecoa"] == {"finetune_lr": 3e-4}
    assert chosen["pmg_aft"] == {"finetune_lr": 1e-3}
    assert chosen["laat"] == {"finetune_lr": 1e-4}  # '{"finetune_lr": 0.0001}' < '{"finetune_lr": 0.001}'
    assert chosen["fare"] == {"finetune_lr": 1e-3}
    assert study.select(list(reversed(rows))) == chosen  # order of the rows does not matter
    ranked = study.rank_configs(rows)
    assert ranked.groupby("method")["rank"].apply(sorted).map(list).to_dict()["tecoa"] == [1, 2, 3]
    assert not ranked.query("method == 'fare'")["eligible"].any()
    loose = study.SelectionRule(clean_tolerance=0.2)
    assert study.select(rows, rule=loose)["tecoa"] == {"finetune_lr": 1e-3}
    assert study.select(rows, rule=loose)["pmg_aft"] == {"finetune_lr": 3e-4}
    with pytest.raises(ValueError, match="reference method"):
        study.select([r for r in rows if r["method"] != "tecoa"])


def test_selection_averages_a_configs_seeds():
    rows = [_row("tecoa", {"finetune_lr": 1e-4}, 0.60, 0.30, seed=0),
            _row("tecoa", {"finetune_lr": 1e-4}, 0.60, 0.10, seed=1),  # mean 0.20
            _row("tecoa", {"finetune_lr": 1e-3}, 0.60, 0.25, seed=0)]
    ranked = study.rank_configs(rows).set_index("config_id")
    assert ranked.loc[study.config_id({"finetune_lr": 1e-4}), "score"] == pytest.approx(0.20)
    assert ranked.loc[study.config_id({"finetune_lr": 1e-4}), "n_seeds"] == 2
    assert study.select(rows)["tecoa"] == {"finetune_lr": 1e-3}


# ---------------------------------------------------------------------------------------------- store
def _fake_scores(config: dict, seed: int) -> dict[str, float]:
    """Deterministic fake validation scores from the config and seed."""
    lr = float(config["finetune_lr"])
    return {"clean": 0.5 + lr * 100 + 0.01 * seed, "robust@4": 0.2 + 0.001 * seed}


def test_store_resumes_after_an_interruption(tmp_path):
    path = tmp_path / "study.jsonl"
    configs = {m: study.search_space()[m][:2] for m in ("tecoa", "pmg_aft")}
    evaluation = {"tasks": sorted(world.VALIDATION_TASKS), "n": 64, "eps": [4.0], "seed": 0}
    total = 2 * 2 * 2
    calls = []

    def interrupted(config, seed):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append((config["method"], seed))
        return _fake_scores(config, seed)

    store = study.StudyStore(path)
    with pytest.raises(KeyboardInterrupt):
        study.run_missing(store, interrupted, stage="validation", configs=configs, train_seeds=[0, 1],
                          evaluation=evaluation)
    assert len(study.StudyStore(path).rows()) == 3
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary left behind

    resumed = []

    def counting(config, seed):
        resumed.append((study.config_id({k: v for k, v in config.items() if k != "method"}), seed))
        return _fake_scores(config, seed)

    store = study.StudyStore(path)
    assert study.run_missing(store, counting, stage="validation", configs=configs, train_seeds=[0, 1],
                             evaluation=evaluation) == total - 3
    assert len(resumed) == total - 3
    rows = store.rows()
    assert len(rows) == total and len({r["key"] for r in rows}) == total
    assert calls == [("tecoa", 0), ("tecoa", 0), ("pmg_aft", 0)]  # seeds outermost
    assert study.run_missing(store, counting, stage="validation", configs=configs, train_seeds=[0, 1],
                             evaluation=evaluation) == 0
    # another evaluation (or stage) is another cell: it runs again
    assert study.run_missing(store, counting, stage="validation", configs={"tecoa": configs["tecoa"][:1]},
                             train_seeds=[0], evaluation={**evaluation, "n": 128}) == 1
    assert len(store.rows(stage="validation")) == total + 1 and store.rows(stage="test") == []
    first = json.loads(path.read_text().splitlines()[0])
    assert first["scores"] == _fake_scores({"method": "tecoa", **configs["tecoa"][0]}, 0)
    key = study.row_key(stage="validation", method="tecoa", overrides=configs["tecoa"][0], train_seed=0,
                        evaluation=evaluation)
    assert first["key"] == key and store.has(key)
    with pytest.raises(ValueError, match="already stored"):
        store.append(first)
    with pytest.raises(ValueError, match="key"):
        store.append({"method": "tecoa"})


def test_row_key_changes_with_every_part():
    parts = dict(stage="validation", method="tecoa", overrides={"finetune_lr": 1e-3}, train_seed=0,
                 evaluation={"n": 64})
    key = study.row_key(**parts)
    assert key == study.row_key(**{**parts, "overrides": {"finetune_lr": 0.001}})
    for change in ({"stage": "test"}, {"method": "fare"}, {"overrides": {"finetune_lr": 3e-4}}, {"train_seed": 1},
                   {"evaluation": {"n": 65}}):
        assert study.row_key(**{**parts, **change}) != key, change


# ---------------------------------------------------------------------------------------------- seeds
def _seed_rows() -> list[dict]:
    values = {"tecoa": [0.30, 0.34, 0.29], "tima": [0.36, 0.37, 0.33]}
    clean = {"tecoa": [0.60, 0.62, 0.61], "tima": [0.60, 0.60, 0.60]}
    return [{"key": f"{m}{s}", "stage": "test", "method": m, "overrides": {"finetune_lr": 1e-3}, "train_seed": s,
             "scores": {"clean": clean[m][s], "robust@4": v[s]}} for m, v in values.items() for s in range(3)]


def test_seed_summary_matches_a_hand_computed_t_interval():
    table = study.seed_summary(_seed_rows()).set_index(["method", "metric"])
    row = table.loc[("tecoa", "robust@4")]
    mean = (0.30 + 0.34 + 0.29) / 3
    sd = (((0.30 - mean) ** 2 + (0.34 - mean) ** 2 + (0.29 - mean) ** 2) / 2) ** 0.5
    half = stats.t.ppf(0.975, 2) * sd / 3 ** 0.5  # t(0.975, 2) = 4.303
    assert row["n_seeds"] == 3 and row["eps"] == 4.0
    assert row["mean"] == pytest.approx(mean)
    assert row["ci_low"] == pytest.approx(mean - half) and row["ci_high"] == pytest.approx(mean + half)
    assert half == pytest.approx(0.0657, abs=1e-4)
    flat = table.loc[("tima", "clean")]  # identical seeds: a zero-width interval
    assert flat["ci_low"] == flat["ci_high"] == pytest.approx(0.60)
    assert table.loc[("tima", "clean"), "eps"] == 0.0


def test_paired_differences_pair_by_seed():
    rows = _seed_rows()
    table = study.paired_seed_differences(rows, "tima", "tecoa").set_index("metric")
    row = table.loc["robust@4"]
    assert row["seeds"] == [0, 1, 2]
    assert row["diffs"] == pytest.approx([0.06, 0.03, 0.04])
    mean, sd = 13 / 300, ((0.06 - 13 / 300) ** 2 + (0.03 - 13 / 300) ** 2 + (0.04 - 13 / 300) ** 2) ** 0.5 / 2 ** 0.5
    half = 4.302652729911275 * sd / 3 ** 0.5
    assert row["mean_diff"] == pytest.approx(mean)
    assert row["ci_low"] == pytest.approx(mean - half) and row["ci_high"] == pytest.approx(mean + half)
    paired = stats.ttest_rel([0.36, 0.37, 0.33], [0.30, 0.34, 0.29]).confidence_interval()
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((paired.low, paired.high))
    unpaired = stats.ttest_ind([0.36, 0.37, 0.33], [0.30, 0.34, 0.29]).confidence_interval()
    assert row["ci_low"] > 0 > unpaired.low  # pairing by seed removes the seed effect
    # seeds that one method lacks are left out of the pairs
    fewer = study.paired_seed_differences([r for r in rows if (r["method"], r["train_seed"]) != ("tecoa", 2)],
                                          "tima", "tecoa").set_index("metric")
    assert fewer.loc["robust@4", "n_pairs"] == 2 and fewer.loc["robust@4", "seeds"] == [0, 1]
    with pytest.raises(ValueError, match="several configurations"):
        study.seed_summary(rows + [{**rows[0], "overrides": {"finetune_lr": 1e-4}, "train_seed": 9}])
    with pytest.raises(ValueError, match="appears twice"):
        study.seed_summary(rows + [rows[0]])
    with pytest.raises(ValueError, match="no rows"):
        study.paired_seed_differences(rows, "tima", "fare")


def test_validation_tasks_evaluate_through_the_one_runner_on_their_val_split(mini_model):
    """data.load_eval_set (hence evaluation.evaluate) reads a validation task's val split, never a test split."""
    from nbhelpers import data, evaluation

    ev = data.load_eval_set("mini", "size_shapes", n=24)
    images, labels = world.generate_task("size_shapes", 24, split="val")
    assert torch.equal(ev.images, images) and torch.equal(ev.labels, labels)
    assert ev.classnames == world.VALIDATION_TASKS["size_shapes"].classnames()
    rows = evaluation.evaluate({"zero_shot": evaluation.zero_shot_model(mini_model)}, profile="mini",
                               datasets=["size_shapes"], attacks=["pgd2"], eps_list=[4.0], n=24, batch_size=24)
    assert rows.attack.tolist() == ["clean", "pgd2"] and rows.accuracy.iloc[1] <= rows.accuracy.iloc[0]


# ---------------------------------------------------------------------------------------------- ablations, findings
def test_ablations_sit_on_their_parents_selected_configuration():
    selected = {"tecoa": {"finetune_lr": 3e-4, "warmup_steps": 20}, "tai": {"finetune_lr": 1e-4, "asam_gain": 0.1},
                "tima": {"finetune_lr": 1e-3, "sc_weight": 25.0}}
    configs = study.ablation_configs(selected)
    assert set(configs) == set(study.ABLATIONS) | set(study.ABLATION_REFERENCES)
    assert configs["margin_uniform"] == [{"finetune_lr": 1e-4, "asam_gain": 0.0, "takd_weight": 0.0}]
    assert configs["iat_sc_mhe"] == [{"finetune_lr": 3e-4, "warmup_steps": 20, "iakd_weight": 0.0, "sc_weight": 25.0}]
    assert configs["iat_mhe"][0]["sc_weight"] == 0.0  # variants without the term do not take TIMA's weight
    assert configs["tima"] == [selected["tima"]]
    for name, (over,) in configs.items():  # every override is a real parameter of the run it configures
        split_overrides(over)
        assert methods.get(study.trained_as(name)).engine in ("tecoa", "tai")
    with pytest.raises(ValueError, match="unknown ablation"):
        study.ablation_configs(selected, ["margin_everything"])
    with pytest.raises(ValueError, match="unknown study method"):
        study.trained_as("tima_plus")


def test_metric_eps_reads_prefixed_and_per_task_names():
    assert study.metric_eps("robust@4/shapes") == 4.0
    assert study.metric_eps("original_text:clean/objects") == 0.0
    assert study.metric_eps("aa@8") == 8.0
    assert math.isnan(study.metric_eps("loss"))


TASKS = ("a", "b")
N_TEST = 4096


def _test_row(method: str, seed: int, scores: dict[str, float], *, n: int = N_TEST, tasks=TASKS) -> dict:
    """A test-stage row: every score also per task (the same on each), with its evaluation's tasks and n."""
    full = dict(scores)
    for k, v in scores.items():
        full.update({f"{k}/{t}": v for t in tasks})
    return {"method": method, "overrides": {}, "train_seed": seed, "evaluation": {"n": n, "tasks": list(tasks)},
            "scores": full}


def _study_rows(tima_shift: float, noise: tuple[float, ...] = (0.0, 0.01, -0.01), *, n: int = N_TEST) -> list[dict]:
    rows = []
    for seed, e in enumerate(noise):
        for method, base in (("tecoa", 0.40), ("pmg_aft", 0.42), ("laat", 0.38), ("fare", 0.30), ("tai", 0.41),
                             ("tima", 0.42 + tima_shift)):
            wiggle = e * (1.0 if method == "tima" else 0.5)
            rows.append(_test_row(method, seed, {"clean": 0.80 + e, "robust@1": base + 0.2 + wiggle,
                                            "robust@4": base + wiggle}, n=n))
    return rows


@pytest.mark.parametrize("shift, verdict", [(0.05, "reproduced"), (-0.05, "not reproduced"), (0.0, "inconclusive")])
def test_study_verdict_follows_the_interval_against_the_best_baseline(shift, verdict):
    found = study.findings_study(_study_rows(shift))
    assert [f.id for f in found] == ["06_tima_vs_best_small_eps", "06_tima_vs_best_large_eps"]
    large = found[1]
    assert large.verdict == verdict
    assert "pmg_aft" in large.ours  # the best baseline at 4/255 is PMG-AFT (0.42)
    assert large.estimate == pytest.approx(100 * (shift + (0.0 + 0.005 - 0.005) / 3), abs=1e-6)


def test_a_study_module_with_zero_effect_and_small_noise_is_no_difference():
    quiet = _study_rows(0.0, noise=(0.0, 0.001, -0.001), n=200_000)  # tiny seed noise, many images
    assert study.findings_study(quiet)[1].verdict == "no difference"
    few = _study_rows(0.0, noise=(0.0, 0.001, -0.001), n=200)  # the same runs on 2 x 200 images: too wide
    assert study.findings_study(few)[1].verdict == "inconclusive"


def test_pooled_verdict_equals_a_hand_computation_on_two_tiny_stores():
    n, kappa = 1000, 1.0  # no strong rows: kappa 1 (independence)
    study_store = [_test_row("tima", 0, {"clean": 0.9, "robust@4": 0.40}, n=n),
                   _test_row("tima", 1, {"clean": 0.9, "robust@4": 0.44}, n=n),
                   _test_row("tecoa", 0, {"clean": 0.9, "robust@4": 0.38}, n=n),
                   _test_row("tecoa", 1, {"clean": 0.9, "robust@4": 0.40}, n=n)]
    replica = [_test_row("tima", 0, {"clean": 0.9, "robust@4": 0.41}, n=n),
               _test_row("tima", 1, {"clean": 0.9, "robust@4": 0.43}, n=n),
               _test_row("tecoa", 0, {"clean": 0.9, "robust@4": 0.40}, n=n),
               _test_row("tecoa", 1, {"clean": 0.9, "robust@4": 0.39}, n=n)]
    for rows in (study_store, replica):  # the other eps, level for both
        for r in rows:
            r["scores"].update({"robust@1": 0.6, "robust@1/a": 0.6, "robust@1/b": 0.6})
    table = study.study_verdicts(study_store, replica={"test": replica})
    pooled = table[(table.finding == "06_tima_vs_best_large_eps") & (table.scope == "pooled")].iloc[0]
    d = np.array([0.02, 0.04, 0.01, 0.04])  # per run, both stores
    p_a, p_b = np.mean([0.40, 0.44, 0.41, 0.43]), np.mean([0.38, 0.40, 0.40, 0.39])
    v_img = 2 * kappa * (p_a * (1 - p_a) + p_b * (1 - p_b)) / n / 4  # two tasks with the same accuracies
    s2k = d.var(ddof=1) / 4
    df = (s2k + v_img) ** 2 / (s2k ** 2 / 3)
    se = math.sqrt(s2k + v_img)
    p = 2 * stats.t.sf(d.mean() / se, df)
    assert pooled.estimate == pytest.approx(d.mean()) and pooled.runs == 4 and pooled.b == "tecoa"
    assert (pooled.se, pooled.df, pooled.p) == pytest.approx((se, df, p))
    # Holm over the family of this scope: the two headline claims (robust@1's p is 1)
    assert pooled.level == pytest.approx(1 - 0.05 / 2 if p <= 0.025 else 0.975)
    half = stats.t.ppf(0.5 + pooled.level / 2, df) * se
    assert (pooled.low, pooled.high) == pytest.approx((d.mean() - half, d.mean() + half))
    alone = table[(table.finding == "06_tima_vs_best_large_eps") & (table.scope == "study")].iloc[0]
    assert alone.estimate == pytest.approx(0.03) and alone.runs == 2 and not alone.decisive and pooled.decisive


def _strong_row(method, seed, pgd_bits, aa_bits, tasks=("a", "b")):
    """A strong-stage row with the same per-image correctness on every task (lists of 0/1)."""
    n = len(pgd_bits)
    scores = {"robust@4": float(np.mean(pgd_bits)), "aa@4": float(np.mean(aa_bits)), "clean": 0.9}
    per_sample = {}
    for t in tasks:
        per_sample[f"robust@4/{t}"] = pack_mask(np.asarray(pgd_bits, bool))
        per_sample[f"aa@4/{t}"] = pack_mask(np.asarray(aa_bits, bool))
    return {"method": method, "train_seed": seed, "evaluation": {"n": n, "tasks": list(tasks)}, "scores": scores,
            "per_sample": per_sample}


def test_gradient_masking_interval_is_seed_level_not_per_re_evaluated_image():
    rng = np.random.default_rng(0)
    n = 400
    pgd = rng.random(n) < 0.5
    ref_aa = pgd & (rng.random(n) < 0.9)  # TeCoA: AA breaks about 10% of PGD's survivors
    same = pgd & (rng.random(n) < 0.9)
    other = pgd & (rng.random(n) < 0.9)
    rows = [_strong_row("tecoa", s, pgd, ref_aa) for s in range(3)] + [_strong_row("tima", 0, pgd, same),
                                                                       _strong_row("tima", 1, pgd, other),
                                                                       _strong_row("tima", 2, pgd, same)]
    gaps = study.strong_gaps(rows, eps=4).set_index("method")
    runs = [(pgd.astype(float) - x) - (pgd.astype(float) - ref_aa) for x in (same, other, same)]
    assert gaps.loc["tima", "excess"] == pytest.approx(100 * np.mean(runs))
    # seed level: 3 run means + the image term of the run-averaged per-image values (2 identical tasks)
    means = [r.mean() for r in runs]
    avg = np.mean(runs, axis=0)
    hand = F.effect_interval(means, 2 * np.var(avg, ddof=1) / n / 4)
    assert (gaps.loc["tima", "excess_low"], gaps.loc["tima", "excess_high"]) == pytest.approx(
        (100 * hand.low, 100 * hand.high))
    assert math.isnan(gaps.loc["tecoa", "excess"])
    # three runs that re-evaluate the same images with the same results are one run's worth of images: the
    # interval is the image term alone, not sqrt(3) narrower (the old bootstrap's error)
    copies = [_strong_row("tecoa", s, pgd, ref_aa) for s in range(3)] + [_strong_row("tima", s, pgd, same)
                                                                         for s in range(3)]
    one = (pgd.astype(float) - same) - (pgd.astype(float) - ref_aa)
    g = study.strong_gaps(copies, eps=4).set_index("method").loc["tima"]
    half = stats.norm.ppf(0.975) * math.sqrt(2 * np.var(one, ddof=1) / n / 4)
    assert g.excess_high - g.excess == pytest.approx(100 * half)
    found = study.findings_study(_study_rows(0.05), strong_rows=copies)[-1]
    assert found.id == "06_no_gradient_masking" and found.verdict == "reproduced"
    assert "APGD-CE + APGD-T (AutoAttack's gradient attacks)" in found.criterion
    masked_aa = pgd & (rng.random(n) < 0.5)  # AA breaks half of TIMA's PGD survivors: far above TeCoA's gap
    masked = study.findings_study(_study_rows(0.05), strong_rows=copies[:3] + [
        _strong_row("tima", s, pgd, masked_aa) for s in range(3)])
    assert masked[-1].verdict == "not reproduced" and masked[-1].ci_low > 2
    single = study.findings_study(_study_rows(0.05), strong_rows=copies[:1] + copies[3:4])[-1]
    assert single.verdict == "inconclusive"  # one run: the run-to-run part cannot be estimated
    alone = study.findings_study(_study_rows(0.05), strong_rows=copies[3:])[-1]  # no TeCoA reference checked
    assert alone.id == "06_no_gradient_masking" and alone.verdict == "inconclusive" and math.isnan(alone.estimate)


def test_store_appends_without_rewriting_survives_a_cut_line_and_prunes(tmp_path):
    """Rows are appended (earlier bytes untouched); a last line cut short by a crash is ignored with a warning and
    cut off by the next append; prune drops the rows a rule rejects; a damaged row inside the store is an error."""
    path = tmp_path / "store.jsonl"
    store = study.StudyStore(path)
    store.append({"key": "a", "stage": "test", "scores": {"clean": 0.5}})
    before = path.read_bytes()
    store.append({"key": "b", "stage": "validation", "scores": {"clean": 0.6}})
    assert path.read_bytes().startswith(before)
    with open(path, "a") as fh:
        fh.write('{"key": "c", "stage": "te')  # a run killed mid-write
    with pytest.warns(UserWarning, match="cut short"):
        assert [r["key"] for r in store.rows()] == ["a", "b"]
    with pytest.warns(UserWarning, match="cut short"):  # the resumed run appends: the cut row goes
        store.append({"key": "d", "stage": "test", "scores": {"clean": 0.7}})
    assert path.read_bytes().startswith(before) and '"c"' not in path.read_text()
    assert [r["key"] for r in store.rows()] == ["a", "b", "d"]
    assert store.prune(lambda r: r["stage"] == "test") == 1
    assert [r["key"] for r in store.rows()] == ["a", "d"]
    path.write_text(path.read_text().replace('"a"', '"a', 1))
    with pytest.raises(ValueError, match="row 1 is not valid JSON"):  # damage inside the store is not guessed at
        store.rows()


def test_study_verdict_keeps_the_clean_condition_with_its_tolerance_in_fractions():
    """A robustness gain bought with more clean accuracy than the tolerance (a fraction: 0.01 = 1 point) is mixed
    (holds in part), and a looser tolerance lets it count."""
    rows = _study_rows(0.05)
    for r in rows:
        if r["method"] == "tima":
            for k in [k for k in r["scores"] if k.startswith("clean")]:
                r["scores"][k] -= 0.03  # three points of clean accuracy for five robust points
    assert [f.verdict for f in study.findings_study(rows)] == ["mixed", "mixed"]
    loose = study.findings_study(rows, clean_tolerance=0.05)
    assert [f.verdict for f in loose] == ["reproduced", "reproduced"] and "-5 point" in loose[1].criterion
