"""The pre-registered confirmatory experiment (issue 22; docs/CONFIRMATORY_PLAN.md): round-2 grids from the records,
the arms by rule, the evaluation specs, and the decision rule on synthetic rows (no training)."""
from __future__ import annotations

import json
import math
import re
import subprocess

import numpy as np
import pytest
from scipy import stats

from nbhelpers import confirm, findings, methods, paths, study
from nbhelpers.confirm import PLAN, Arm

ROUND1 = confirm.round1_rows()
REPLICA = confirm.round1_rows(paths.STUDY_REPLICA_STORE)


def _round2_rows(space: dict, *, better: dict | None = None) -> list[dict]:
    """Fake round-2 validation rows: clean 0.92, robust 0.30 unless `better` gives {(method, cid): (clean, robust)}."""
    rows = []
    for method, configs in space.items():
        for c in configs:
            clean, robust = (better or {}).get((method, study.config_id(c)), (0.92, 0.30))
            rows.append({"stage": confirm.ROUND2, "method": method, "overrides": dict(c), "train_seed": 0,
                         "scores": {"clean": clean, "robust@4": robust}})
    return rows


# ---------------------------------------------------------------------------------------------- round 2
def test_round2_gives_every_method_the_same_budget_of_new_configurations():
    space = confirm.round2_space(ROUND1)
    assert set(space) == set(study.study_methods())
    round1 = study.search_space()
    for method, configs in space.items():
        assert len(configs) == methods.EXTENSION
        assert len({study.config_id(c) for c in configs}) == methods.EXTENSION
        assert not {study.config_id(c) for c in configs} & {study.config_id(c) for c in round1[method]}, method


def test_round2_continues_every_grid_beyond_the_edge_its_pick_sits_on():
    space = confirm.round2_space(ROUND1)
    picks = study.select(ROUND1)
    replica = study.select(REPLICA)
    # the edges the plan names, measured on the committed stores
    assert picks["tai"]["takd_weight"] == max(c["takd_weight"] for c in study.search_space()["tai"])
    assert replica["pmg_aft"]["pmg_alpha"] == max(methods.PMG_WEIGHTS)
    assert picks["laat"]["laat_spread"] == min(methods.LAAT_SPREADS)
    assert picks["fare"]["finetune_lr"] == max(c["finetune_lr"] for c in study.search_space()["fare"])
    assert min(c["takd_weight"] for c in space["tai"]) > picks["tai"]["takd_weight"]
    assert min(c["pmg_alpha"] for c in space["pmg_aft"]) > replica["pmg_aft"]["pmg_alpha"]
    assert max(c["laat_spread"] for c in space["laat"]) < picks["laat"]["laat_spread"]
    assert all(c["laat_spread"] > 1 for c in space["laat"])
    assert min(c["finetune_lr"] for c in space["fare"]) > picks["fare"]["finetune_lr"]
    # TIMA: its TAI strength, never searched, at its pick's lr and sc_weight
    assert {c["takd_weight"] for c in space["tima"]} == set(methods.TIMA_TAI_STRENGTHS)
    assert all(c["sc_weight"] == picks["tima"]["sc_weight"] and c["finetune_lr"] == picks["tima"]["finetune_lr"]
               for c in space["tima"])
    # TeCoA (no pick on an edge): the learning rate half-way to the next grid rate
    lrs = study.LR_GRID["mini"]
    assert {c["finetune_lr"] for c in space["tecoa"]} == {round(math.sqrt(lrs[1] * lrs[2]), 6)}
    # lr is kept where it is not the axis
    for m in ("pmg_aft", "laat", "tai", "tima"):
        assert {c["finetune_lr"] for c in space[m]} == {picks[m]["finetune_lr"]}


def _fmt(x: float) -> str:
    return f"{x:g}"


def test_plan_document_names_the_round2_configurations_the_code_runs():
    doc = confirm.PLAN_DOC.read_text()
    space = confirm.round2_space(ROUND1)
    rows = {m: line for m in ("TeCoA", "PMG-AFT", "LAAT-style", "FARE", "TAI", "TIMA")
            for line in doc.splitlines() if line.startswith(f"| {m} |")}
    assert "{" + ", ".join(_fmt(c["pmg_alpha"]) for c in space["pmg_aft"]) + "}" in rows["PMG-AFT"]
    assert "{" + ", ".join(_fmt(c["laat_spread"]) for c in space["laat"]) + "}" in rows["LAAT-style"]
    assert "{" + ", ".join(_fmt(c["takd_weight"]) for c in space["tai"]) + "}" in rows["TAI"]
    assert "{" + ", ".join(_fmt(c["takd_weight"]) for c in space["tima"]) + "}" in rows["TIMA"]
    assert "{" + ", ".join(_fmt(c["warmup_steps"]) for c in space["tecoa"]) + "}" in rows["TeCoA"]
    fare = re.search(r"lr \{([^}]*)\}", rows["FARE"]).group(1).split(", ")
    assert [float(x) for x in fare] == pytest.approx([c["finetune_lr"] for c in space["fare"]], rel=2e-3)
    tecoa_lr = float(re.search(r"lr ([0-9.e-]+) x", rows["TeCoA"]).group(1))
    assert tecoa_lr == pytest.approx(space["tecoa"][0]["finetune_lr"], rel=2e-3)
    assert f"{len(PLAN.train_seeds)} seeds never used" in doc and "1,024 images per task" in doc
    assert f"{PLAN.train_seeds[0]}, {PLAN.train_seeds[1]}" in doc and f"{PLAN.train_seeds[-1]}" in doc


# ---------------------------------------------------------------------------------------------- arms and specs
def test_arms_need_round2_and_follow_the_rule():
    space = confirm.round2_space(ROUND1)
    with pytest.raises(RuntimeError, match="round-2"):
        confirm.arms(ROUND1, REPLICA, [])
    strong_tima = study.config_id(space["tima"][1])  # make TIMA at strength 4 the best eligible configuration
    arms = confirm.arms(ROUND1, REPLICA, _round2_rows(space, better={("tima", strong_tima): (0.92, 0.45)}))
    names = [a.name for a in arms]
    assert names[0] == "tima" and names[-2:] == ["tecoa", "tai_matched"]
    assert arms[0].overrides == space["tima"][1]
    pmg = [a for a in arms if a.method == "pmg_aft"]
    assert {a.overrides["pmg_alpha"] for a in pmg} == {1.0, 2.0}  # CPU and H100 round 1; round 2's pick repeats 1
    assert any("rounds 1 and 2" in a.source for a in pmg)
    tai = arms[-1]
    assert tai.method == "tai" and tai.overrides == {"finetune_lr": space["tima"][1]["finetune_lr"],
                                                    "asam_gain": space["tima"][1]["asam_gain"],
                                                    "takd_weight": space["tima"][1]["takd_weight"]}


def test_a_new_pmg_aft_pick_in_round2_becomes_an_arm():
    space = confirm.round2_space(ROUND1)
    new = study.config_id(space["pmg_aft"][0])
    arms = confirm.arms(ROUND1, REPLICA, _round2_rows(space, better={("pmg_aft", new): (0.92, 0.5)}))
    assert sorted(a.overrides["pmg_alpha"] for a in arms if a.method == "pmg_aft") == [1.0, 2.0, 4.0]


def test_evaluation_specs_fresh_seeds_and_round1_comparability(tmp_path):
    spec = confirm.evaluation_spec(confirm.ROUND2, 0)
    assert all(r["evaluation"] == spec for r in ROUND1)  # round 2 is scored exactly as round 1
    a, b = (confirm.evaluation_spec(confirm.CONFIRM, s) for s in PLAN.train_seeds[:2])
    assert a["seed"] == PLAN.eval_seed(PLAN.train_seeds[0]) != b["seed"]
    assert a["n"] == PLAN.test_images and a["eps"] == list(PLAN.eps) and a["attack"] == "pgd"
    used = {int(r["evaluation"]["seed"]) for r in study.StudyStore(paths.STUDY_STORE).rows()}
    assert not used & {PLAN.eval_seed(s) for s in PLAN.train_seeds}
    assert not {int(r["train_seed"]) for r in study.StudyStore(paths.STUDY_STORE).rows()} & set(PLAN.train_seeds)
    strong = confirm.evaluation_spec(confirm.CONFIRM_STRONG, PLAN.train_seeds[0])
    assert strong["n"] == PLAN.strong_images and strong["attack"] == "pgd+aa" and strong["seed"] == a["seed"]
    store = study.StudyStore(tmp_path / "c.jsonl")
    items = confirm.planned(confirm.ROUND2, store)
    assert len(items) == len(study.study_methods()) * methods.EXTENSION == len({i["key"] for i in items})
    with pytest.raises(ValueError, match="unknown phase"):
        confirm.evaluation_spec("nope", 0)


def test_status_cli_before_round2(tmp_path, capsys):
    assert confirm.main(["--status", "--store", str(tmp_path / "c.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "round2" in out and f"{3 * len(study.study_methods())}" in out  # 21: 3 per studied method
    with pytest.raises(SystemExit):
        confirm.main(["--worker", "3", "--workers", "2", "--store", str(tmp_path / "c.jsonl")])


# ---------------------------------------------------------------------------------------------- decision rule
ARMS = [Arm("tima", "tima", {}, "tested", ""), Arm("pmg_aft_a1", "pmg_aft", {}, "comparator", ""),
        Arm("pmg_aft_a2", "pmg_aft", {}, "comparator", ""), Arm("tecoa", "tecoa", {}, "positive control", ""),
        Arm("tai_matched", "tai", {}, "IAT ablation", "")]


def _confirm_rows(diff: dict[str, float], *, clean_diff: float = 0.0, sd: float = 0.002, seed: int = 0) -> list[dict]:
    """Rows of every arm at the plan's seeds: TIMA = base + noise; arm = TIMA - diff[arm] (robust) or - clean_diff
    (clean), + noise of sd (fractions)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in PLAN.train_seeds:
        tima = {k: v + rng.normal(0, sd) for k, v in {"clean": 0.9, "robust@1": 0.6, "robust@4": 0.35}.items()}
        rows.append({"arm": "tima", "train_seed": s, "scores": tima})
        for arm in ARMS[1:]:
            sc = {k: v - (clean_diff if k == "clean" else diff[arm.name]) + rng.normal(0, sd) for k, v in tima.items()}
            rows.append({"arm": arm.name, "train_seed": s, "scores": sc})
    return rows


def test_more_robust_level_less_and_mixed_are_all_reachable():
    ahead = _confirm_rows({"pmg_aft_a1": 0.03, "pmg_aft_a2": 0.025, "tecoa": 0.05, "tai_matched": 0.0})
    t = confirm.comparisons(ahead)
    assert confirm.headline(t, ARMS, eps=4.0) == findings.REPRODUCED
    assert t.loc[(t.arm == "tai_matched") & (t.eps == 4.0), "verdict"].item() == findings.NO_DIFFERENCE
    level = _confirm_rows({"pmg_aft_a1": 0.001, "pmg_aft_a2": -0.001, "tecoa": 0.05, "tai_matched": 0.0})
    assert confirm.headline(confirm.comparisons(level), ARMS, eps=4.0) == findings.NO_DIFFERENCE
    behind = _confirm_rows({"pmg_aft_a1": 0.0, "pmg_aft_a2": -0.03, "tecoa": 0.05, "tai_matched": 0.0})
    assert confirm.headline(confirm.comparisons(behind), ARMS, eps=4.0) == findings.NOT_REPRODUCED
    costly = _confirm_rows({"pmg_aft_a1": 0.03, "pmg_aft_a2": 0.03, "tecoa": 0.05, "tai_matched": 0.0},
                           clean_diff=-0.03)
    assert confirm.headline(confirm.comparisons(costly), ARMS, eps=4.0) == findings.MIXED
    noisy = _confirm_rows({"pmg_aft_a1": 0.005, "pmg_aft_a2": 0.005, "tecoa": 0.05, "tai_matched": 0.0}, sd=0.03)
    assert confirm.headline(confirm.comparisons(noisy), ARMS, eps=4.0) == findings.INCONCLUSIVE


def test_comparisons_are_paired_t_intervals_at_holm_levels():
    rows = _confirm_rows({"pmg_aft_a1": 0.03, "pmg_aft_a2": 0.02, "tecoa": 0.05, "tai_matched": 0.004}, sd=0.004)
    t = confirm.comparisons(rows)
    assert len(t) == 2 * (len(ARMS) - 1) and list(t.eps[:len(ARMS) - 1]) == [4.0] * (len(ARMS) - 1)
    by = {(r["arm"], r["train_seed"]): r["scores"] for r in rows}
    d = np.array([by[("tima", s)]["robust@4"] - by[("pmg_aft_a2", s)]["robust@4"] for s in PLAN.train_seeds])
    line = t[(t.arm == "pmg_aft_a2") & (t.eps == 4.0)].iloc[0]
    half = stats.t.ppf(0.5 + line.level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    assert line.estimate == pytest.approx(d.mean()) and line.high - line.estimate == pytest.approx(half)
    assert line.p == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    levels, _ = findings.holm(list(t.p))
    assert list(t.level) == pytest.approx(levels)
    assert t.level.max() == pytest.approx(1 - PLAN.alpha / len(t))  # the smallest p is tested at alpha / m


def test_collapses_stay_in_and_are_reported_beside():
    rows = _confirm_rows({"pmg_aft_a1": 0.01, "pmg_aft_a2": 0.01, "tecoa": 0.05, "tai_matched": 0.0})
    hit = next(r for r in rows if r["arm"] == "pmg_aft_a1" and r["train_seed"] == PLAN.train_seeds[3])
    hit["scores"] = {"clean": 0.5, "robust@1": 0.2, "robust@4": 0.05}
    assert confirm.collapses(rows)["pmg_aft_a1"] == [PLAN.train_seeds[3]]
    line = confirm.comparisons(rows).query("arm == 'pmg_aft_a1' and eps == 4.0").iloc[0]
    assert line.estimate > line.without_collapses + 0.015  # the collapse counts (in TIMA's favour) ...
    assert line.without_collapses == pytest.approx(0.01, abs=0.003)  # ... and the sensitivity analysis drops it
    assert confirm.arm_summary(rows).set_index("arm").loc["pmg_aft_a1", "collapses"] == 1


def test_masking_check_is_noninferiority_over_seeds():
    rows = []
    for s, (gt, gc) in zip(PLAN.train_seeds[:3], [(0.03, 0.02), (0.035, 0.03), (0.02, 0.02)]):
        rows.append({"arm": "tima", "train_seed": s, "scores": {"robust@4": 0.4, "aa@4": 0.4 - gt}})
        rows.append({"arm": "tecoa", "train_seed": s, "scores": {"robust@4": 0.3, "aa@4": 0.3 - gc}})
    m = confirm.masking(rows)
    assert m["seeds"] == 3 and m["estimate"] == pytest.approx((0.01 + 0.005 + 0.0) / 3)
    assert m["verdict"] == findings.REPRODUCED
    assert confirm.masking([])["verdict"] == findings.INCONCLUSIVE


# ---------------------------------------------------------------------------------------------- the committed run
def test_committed_store_ran_on_the_plan_commit():
    store = study.StudyStore(paths.CONFIRM_STORE)
    rows = store.rows()
    if not rows:
        pytest.skip("the confirmatory store is empty")
    later = [r for r in rows if r["method"] in confirm.ADDED_AFTER_PLAN]  # round 2 only, never an arm
    assert {r["stage"] for r in later} <= {confirm.ROUND2} and all(not r["code"].endswith("+dirty") for r in later)
    codes = {r["code"] for r in rows if r["method"] not in confirm.ADDED_AFTER_PLAN}
    assert len(codes) == 1 and not next(iter(codes)).endswith("+dirty"), codes
    try:
        listed = subprocess.run(["git", "ls-tree", "--name-only", next(iter(codes)), "docs/"],
                                cwd=paths.PROJECT_ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no git history here")
    assert "docs/CONFIRMATORY_PLAN.md" in listed.split()
    planned = set()
    for phase in confirm.PHASES:
        try:
            planned |= {i["key"] for i in confirm.planned(phase, store)}
        except RuntimeError:  # its arms need round 2, not complete yet
            break
    assert {r["key"] for r in rows} <= planned  # every stored row is one the plan makes, with this code's keys
    assert len(rows) == len({r["key"] for r in rows})  # no reruns


def test_headlines_say_what_the_confirmatory_findings_say():
    """docs/FINDINGS.md's headline and the README's summary follow the pre-registered verdicts
    (results/06_findings.json), whatever they are."""
    stored = {f["id"]: f["verdict"] for f in
              json.loads((paths.PROJECT_ROOT / "results" / "06_findings.json").read_text())["findings"]}
    if "06_confirm_pmg_aft_4" not in stored:
        pytest.skip("the confirmatory run is not complete")
    readme = (paths.PROJECT_ROOT / "README.md").read_text()
    summary = readme[readme.index("## What we found"):readme.index("<!-- findings:claims:start -->")]
    v4, v1 = stored["06_confirm_pmg_aft_4"], stored["06_confirm_pmg_aft_1"]
    assert (f"**TIMA against the best baseline (PMG-AFT): {v4}** at 4/255 and at 1/255" in summary if v4 == v1 else
            f"**TIMA against the best baseline (PMG-AFT): {v4}** at 4/255" in summary)
    assert f"**IAT on top of TAI at the same TAI strength: {stored['06_confirm_iat_matched']}**" in summary
    assert ("TIMA against TeCoA: ahead" in summary) == (stored["06_confirm_tecoa_control"] == "reproduced")
    text = (paths.PROJECT_ROOT / "docs" / "FINDINGS.md").read_text()
    head = text[text.index("**The headline: a pre-registered confirmatory experiment"):]
    head = head[:head.index("**The exploratory study before it")]
    v4, v1 = stored["06_confirm_pmg_aft_4"], stored["06_confirm_pmg_aft_1"]
    assert f"**TIMA vs PMG-AFT: {v4} at 4/255 and at 1/255.**" in head if v4 == v1 else \
        f"**TIMA vs PMG-AFT: {v4} at 4/255" in head
    assert f"*{stored['06_confirm_iat_matched']}*" in head.split("IAT adds", 1)[1].split("\n-", 1)[0]
    assert f"positive control is {stored['06_confirm_tecoa_control']}" in head
    assert f"over\n{len(PLAN.train_seeds)} fresh seeds" in head or f"{len(PLAN.train_seeds)} fresh seeds" in head
