"""The findings layer: statistics helpers on known cases, each claim function on synthetic tables whose verdict
is known in advance (both ways), the JSON round trip, and the README's generated findings table."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nbhelpers import findings as F
from nbhelpers import paths

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "findings_table.py"


# ------------------------------------------------------------------------------------------ statistics helpers
def test_wilson_ci_matches_the_textbook_value():
    iv = F.wilson_ci(50, 100)
    assert iv.estimate == 0.5
    assert iv.low == pytest.approx(0.4038, abs=1e-4) and iv.high == pytest.approx(0.5962, abs=1e-4)
    assert F.wilson_ci(0, 20).low == 0.0 and F.wilson_ci(0, 20).high > 0.1  # never a zero-width interval at 0


def test_fisher_z_ci_matches_scipy_and_stays_below_zero_for_a_perfect_negative():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    y = 0.5 * x + rng.normal(size=200)
    res = stats.pearsonr(x, y)
    ref = res.confidence_interval(0.95)
    iv = F.fisher_z_ci(float(res.statistic), 200)
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high), abs=1e-9)
    neg = F.fisher_z_ci(-1.0, 50)
    assert neg.high < 0
    assert math.isnan(F.fisher_z_ci(0.3, 3).low)


def test_bootstrap_correlation_perfect_negative_and_independent():
    x = np.linspace(0, 1, 60)
    for method in ("pearson", "spearman"):
        iv = F.bootstrap_correlation_ci(x, -x, method=method, n_boot=500)
        assert iv.estimate == pytest.approx(-1.0) and iv.high < 0
    rng = np.random.default_rng(2)  # a draw whose sample rho is near 0 (-0.009)
    a, b = rng.normal(size=400), rng.normal(size=400)
    iv = F.bootstrap_correlation_ci(a, b, n_boot=500)
    assert iv.low < 0 < iv.high
    assert iv.estimate == pytest.approx(stats.spearmanr(a, b).statistic)


def test_bootstrap_correlation_is_seeded_and_groups_widen_a_clustered_ci():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(10), 50)
    shared = rng.normal(size=10)[groups]  # a cluster effect common to x and y
    x = shared + 0.3 * rng.normal(size=500)
    y = shared + 0.3 * rng.normal(size=500)
    one = F.bootstrap_correlation_ci(x, y, groups=groups, n_boot=400, seed=5)
    assert one == F.bootstrap_correlation_ci(x, y, groups=groups, n_boot=400, seed=5)
    assert one != F.bootstrap_correlation_ci(x, y, groups=groups, n_boot=400, seed=6)
    pairs = F.bootstrap_correlation_ci(x, y, n_boot=400, seed=5)
    assert (one.high - one.low) > 2 * (pairs.high - pairs.low)


def test_paired_bootstrap_identical_masks_give_exactly_zero():
    m = np.random.default_rng(0).random(300) < 0.6
    assert tuple(F.paired_bootstrap_diff_ci(m, m.copy())) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_detects_a_planted_ten_point_difference():
    rng = np.random.default_rng(0)
    b = rng.random(1000) < 0.5
    a = b.copy()
    a[np.flatnonzero(~b)[:100]] = True  # +100 correct images = +10 points
    iv = F.paired_bootstrap_diff_ci(a, b, n_boot=1000)
    assert iv.estimate == pytest.approx(0.10)
    assert 0 < iv.low < 0.10 < iv.high
    rev = F.paired_bootstrap_diff_ci(b, a, n_boot=1000)
    assert rev.high < 0


def test_paired_bootstrap_averages_strata_with_equal_weight():
    a = np.r_[np.ones(100, bool), np.zeros(900, bool)]
    b = np.zeros(1000, bool)
    strata = np.r_[np.full(100, "small"), np.full(900, "large")]
    assert F.paired_bootstrap_diff_ci(a, b, strata=strata).estimate == pytest.approx(0.5)
    assert F.paired_bootstrap_diff_ci(a, b).estimate == pytest.approx(0.1)


def test_rel_spread_constant_shift_and_unrelated_margins():
    small = np.random.default_rng(0).normal(size=500)
    shift = F.bootstrap_rel_spread_ci(small, small - 3.0, n_boot=300)
    assert shift.estimate == pytest.approx(0.0, abs=1e-12) and shift.high < 1e-9
    unrelated = F.bootstrap_rel_spread_ci(small, np.random.default_rng(1).normal(size=500), n_boot=300)
    assert unrelated.low > 1.2 and unrelated.estimate == pytest.approx(math.sqrt(2), abs=0.15)


def test_t_interval_matches_scipy():
    v = [0.1, 0.3, 0.2, 0.4]
    iv = F.t_interval(v)
    ref = stats.ttest_1samp(v, 0).confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high))
    assert math.isnan(F.t_interval([0.5]).low)


def test_finding_rejects_unknown_verdicts_and_bad_notebooks():
    kw = dict(id="x", claim="c", criterion="k", paper="", ours="", estimate=0.0, ci_low=0.0, ci_high=0.0,
              figure="")
    with pytest.raises(ValueError):
        F.Finding(notebook="01", verdict="sort of", **kw)
    with pytest.raises(ValueError):
        F.Finding(notebook="1", verdict="mixed", **kw)


# ------------------------------------------------------------------------------ claim functions: 00 precondition
def _robustness(clean: float, robust: float, chance: float = 0.1, n: int = 512) -> pd.DataFrame:
    rows = []
    for task in ("a", "b"):
        for eps, acc in ((0.0, clean), (1.0, (clean + robust) / 2), (4.0, robust)):
            rows.append({"task": task, "eps": eps, "accuracy": acc, "chance": chance, "n": n, "extra": "x"})
    return pd.DataFrame(rows)


def test_mini_clip_precondition_both_ways():
    good = F.findings_mini_clip(_robustness(0.9, 0.2))
    assert [f.verdict for f in good] == ["reproduced", "reproduced"]
    weak = F.findings_mini_clip(_robustness(0.2, 0.19))  # 2x chance, attack removes 5%
    assert [f.verdict for f in weak] == ["not reproduced", "not reproduced"]


# ----------------------------------------------------------------------------------- claim functions: finding 1
def _sweep(stable: bool, n: int = 600, classes: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = np.arange(n) % classes
    base = rng.normal(0, 2, classes)[label] + rng.normal(0, 2, n)
    rows = []
    for eps in (0.0, 1.0, 2.0, 4.0):
        if stable:
            margin = base - 1.5 * eps + rng.normal(0, 0.2, n)
        else:
            margin = base - 1.5 * eps if eps <= 1 else rng.normal(0, 3, n) - 1.5 * eps
        rows.append(pd.DataFrame({"sample": np.arange(n), "eps": eps, "label": label, "margin": margin,
                                  "correct": margin > 0}))
    return pd.concat(rows, ignore_index=True)


def test_margin_offset_reproduced_for_a_constant_shift():
    f = F.finding_margin_offset(_sweep(stable=True), n_boot=300)
    assert f.verdict == "reproduced" and f.ci_high < 0.5
    table = F.offset_stability(_sweep(stable=True), n_boot=200)
    assert set(table.holds) == {"yes"} and len(table) == 3  # eps 0 (clean) left out by default


def test_margin_offset_not_reproduced_when_large_eps_margins_are_unrelated():
    f = F.finding_margin_offset(_sweep(stable=False), n_boot=300)
    assert f.verdict == "not reproduced" and f.ci_low > 0.5
    assert "holds for eps pairs: none" in f.detail
    by_class = F.offset_stability_by_class(_sweep(stable=False), n_boot=200)
    assert len(by_class) == 12 and (by_class.holds != "yes").all()


def test_margin_offset_reports_the_spread_across_models():
    per_model = pd.DataFrame({"model": ["a", "b"], "offset_mean": [-2.0, -4.0], "offset_std": [1.0, 1.0]})
    assert F.offset_by_model(per_model).offset_cv.tolist() == [0.5, 0.25]
    f = F.finding_margin_offset(_sweep(stable=True), per_model=per_model, n_boot=100)
    assert "Across 2 models the mean offset runs -4.00 to -2.00 logits" in f.detail


def test_margin_offset_needs_the_headline_pair():
    with pytest.raises(ValueError):
        F.finding_margin_offset(_sweep(stable=True), eps_large=8.0, n_boot=50)


# ----------------------------------------------------------------------------------- claim functions: finding 2
def _pairs(sign: float, classes: int = 15, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    i, j = np.where(~np.eye(classes, dtype=bool))
    sim = rng.uniform(0, 1, len(i))
    return pd.DataFrame({"true": i, "other": j, "similarity": sim,
                         "margin": sign * 5 * sim + rng.normal(0, 1, len(i)), "config": "{}"})


def test_margin_similarity_both_ways():
    neg = F.finding_margin_similarity(_pairs(-1.0), n_boot=300)
    assert neg.verdict == "reproduced" and neg.ci_high < 0
    assert "Spearman -0.651" in neg.paper
    pos = F.finding_margin_similarity(_pairs(+1.0), n_boot=300)
    assert pos.verdict == "not reproduced" and pos.ci_low > 0
    none = F.finding_margin_similarity(_pairs(0.0), n_boot=300)
    assert none.verdict != "reproduced"


# ----------------------------------------------------------------------------------- claim functions: finding 3
def _structure(laat_rho: float, iat_rho: float, iat_gain: float) -> pd.DataFrame:
    rows = []
    for k, d in enumerate(("a", "b", "c", "d")):
        j = 0.005 * k
        rows += [{"text": "original", "dataset": d, "min_distance": 0.5 + j, "mean_distance": 1.0 + j,
                  "consistency_rho": 1.0},
                 {"text": "IAT (SC-MHE + IAKD)", "dataset": d, "min_distance": 0.5 + iat_gain + 2 * j,
                  "mean_distance": 1.0 + iat_gain + 2 * j, "consistency_rho": iat_rho - j},
                 {"text": "LAAT expansion", "dataset": d, "min_distance": 0.8, "mean_distance": 1.3,
                  "consistency_rho": laat_rho - j},
                 {"text": "MHE", "dataset": d, "min_distance": 0.8, "mean_distance": 1.3,
                  "consistency_rho": laat_rho + 0.05 - j}]
    return pd.DataFrame(rows)


def test_text_structure_claims_reproduced():
    out = {f.id: f for f in F.findings_text_structure(_structure(laat_rho=0.7, iat_rho=0.99, iat_gain=0.1))}
    assert out["03_laat_expansion_disrupts_consistency"].verdict == "reproduced"
    assert out["03_mhe_disrupts_consistency"].verdict == "reproduced"
    assert out["03_iat_spreads_classes"].verdict == "reproduced"
    assert out["03_iat_keeps_consistency"].verdict == "reproduced"


def test_text_structure_claims_not_reproduced():
    out = {f.id: f for f in F.findings_text_structure(_structure(laat_rho=0.99, iat_rho=0.8, iat_gain=-0.1))}
    assert out["03_laat_expansion_disrupts_consistency"].verdict == "not reproduced"
    assert out["03_iat_spreads_classes"].verdict == "not reproduced"
    assert out["03_iat_keeps_consistency"].verdict == "not reproduced"
    with pytest.raises(ValueError, match="no rows"):
        F.findings_text_structure(_structure(0.7, 0.99, 0.1), existing=("nonexistent",))


# ----------------------------------------------------------------------------- claim functions: TIMA's balance
def _pack(mask: np.ndarray) -> str:
    return np.packbits(mask.astype(np.uint8)).tobytes().hex()


def _eval_rows(tima_gain: float, clean_gain: float = 0.0, n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for dataset, zero_shot in (("d1", True), ("d2", True), ("ft", False)):
        for attack, eps, p in (("clean", 0.0, 0.8), ("pgd10", 1.0, 0.5), ("pgd10", 4.0, 0.2)):
            base = rng.random(n) < p
            gain = clean_gain if attack == "clean" else tima_gain
            tima = base.copy()
            flip = np.flatnonzero(~base if gain > 0 else base)[:int(abs(gain) * n)]
            tima[flip] = gain > 0
            for model, mask in (("tima", tima), ("tecoa", base), ("pmg_aft", base)):
                rows.append({"model": model, "model_label": model.upper(), "dataset": dataset, "attack": attack,
                             "eps": eps, "n": n, "correct": _pack(mask), "zero_shot": zero_shot})
    return pd.DataFrame(rows)


def test_tima_balance_both_ways():
    ahead = F.findings_tima_balance(_eval_rows(+0.10), n_boot=500)
    assert [f.verdict for f in ahead] == ["reproduced", "reproduced"]
    assert ahead[0].estimate == pytest.approx(10.0) and ahead[0].ci_low > 0
    assert F.SEED_NOTE in ahead[0].detail
    behind = F.findings_tima_balance(_eval_rows(-0.10), n_boot=500)
    assert [f.verdict for f in behind] == ["not reproduced", "not reproduced"]
    costly = F.findings_tima_balance(_eval_rows(+0.10, clean_gain=-0.10), n_boot=500)
    assert [f.verdict for f in costly] == ["mixed", "mixed"]  # robust gain bought with 10 clean points


def test_tima_balance_ignores_the_fine_tuning_set():
    rows = _eval_rows(+0.10)
    masks = F.correctness_masks(rows, model="tima", attack="pgd10", eps=4.0)
    assert sorted(masks) == ["d1", "d2"]


# ----------------------------------------------------------------------------------------------- storage
def _some_findings() -> list[F.Finding]:
    return F.findings_mini_clip(_robustness(0.9, 0.2)) + [F.Finding(
        id="00_nan", notebook="00", claim="c", criterion="k", paper="", ours="n/a", estimate=1.0,
        ci_low=float("nan"), ci_high=float("nan"), verdict="mixed", figure="")]


def test_write_read_round_trip(tmp_path):
    fs = _some_findings()
    path = F.write_findings(fs, "00", config={"seed": 0}, results_dir=tmp_path)
    assert path == tmp_path / "00_findings.json"
    payload = json.loads(path.read_text())  # strict JSON: NaN stored as null
    assert payload["notebook"] == "00" and payload["config"] == {"seed": 0} and payload["code_version"]
    back = F.read_findings("00", results_dir=tmp_path)
    scope = F.default_scope("00", {"seed": 0})
    assert back == [{**f.to_dict(), "scope": scope} for f in fs]  # write_findings fills each empty scope in
    assert back[-1]["ci_low"] is None
    frame = F.findings_frame(back)
    assert list(frame.columns) == ["claim", "paper", "ours", "verdict"] and len(frame) == 3


def test_write_uses_the_results_dir_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path)
    F.write_findings(_some_findings(), "00_mini_world", config={})
    assert (tmp_path / "00_findings.json").is_file()
    assert len(F.read_findings("00")) == 3


def test_write_rejects_findings_of_another_notebook_and_duplicate_ids(tmp_path):
    fs = _some_findings()
    with pytest.raises(ValueError):
        F.write_findings(fs, "01", config={}, results_dir=tmp_path)
    with pytest.raises(ValueError):
        F.write_findings(fs + fs[:1], "00", config={}, results_dir=tmp_path)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------- the README's table
def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_readme_table_render_check_and_drift(tmp_path):
    results = tmp_path / "results"
    F.write_findings(_some_findings(), "00", config={}, results_dir=results)
    F.write_findings(F.findings_tima_balance(_eval_rows(+0.10), n_boot=200, notebook="05"), "05", config={},
                     results_dir=results)
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nFirst paragraph.\n\n<!-- findings:start -->\n<!-- findings:end -->\n\nRest.\n")
    assert _script("--readme", str(readme), "--results", str(results), "--check").returncode == 1
    assert _script("--readme", str(readme), "--results", str(results)).returncode == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nFirst paragraph.\n") and text.endswith("<!-- findings:end -->\n\nRest.\n")
    assert "| finding / claim | paper | ours | verdict | scope | figure |" in text
    assert "[00_mini_clip_robustness.png](figures/00_mini_clip_robustness.png)" in text
    assert text.count("**reproduced**") == 4
    done = _script("--readme", str(readme), "--results", str(results), "--check")
    assert done.returncode == 0, done.stderr
    # alter one number in a findings file: the README no longer matches
    path = results / "05_findings.json"
    payload = json.loads(path.read_text())
    payload["findings"][0]["ours"] = payload["findings"][0]["ours"].replace("+10.0", "+11.0")
    assert payload["findings"][0]["ours"] != json.loads(path.read_text())["findings"][0]["ours"]
    path.write_text(json.dumps(payload))
    drift = _script("--readme", str(readme), "--results", str(results), "--check")
    assert drift.returncode == 1 and "+11.0" in drift.stderr


def test_readme_without_markers_fails_the_check(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n")
    assert _script("--readme", str(readme), "--results", str(tmp_path), "--check").returncode == 1


def test_the_project_readme_table_matches_the_findings_files(tmp_path):
    copy = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", copy)  # a copy: the check must not depend on the README being writable
    done = _script("--readme", str(copy), "--results", str(paths.RESULTS_DIR), "--check")
    assert done.returncode == 0, done.stderr + "\nrun: python scripts/findings_table.py"


# ------------------------------------------------------------------------------- the one 'ahead' verdict rule
def test_judge_ahead_is_the_one_verdict_rule_in_fractions():
    up, down, straddle = F.Interval(0.02, 0.01, 0.03), F.Interval(-0.02, -0.03, -0.01), F.Interval(0.0, -0.01, 0.01)
    assert F.judge_ahead([up]) == "reproduced"
    assert F.judge_ahead([up, down]) == "mixed"  # holds in part, fails in part
    assert F.judge_ahead([down, straddle]) == "not reproduced"  # fails somewhere, holds nowhere
    assert F.judge_ahead([up, straddle]) == "inconclusive"  # a straddling interval: the data cannot tell
    assert F.judge_ahead([straddle]) == "inconclusive"
    assert F.judge_ahead([up, F.Interval(0.02, math.nan, math.nan)]) == "inconclusive"
    assert F.judge_ahead([up], clean=F.Interval(-0.01, -0.02, -0.005)) == "reproduced"  # -0.5 point: within 1
    costly = F.Interval(-0.05, -0.06, -0.02)
    assert F.judge_ahead([up], clean=costly) == "mixed"  # clean cost beyond tolerance: mixed, not refuted
    assert F.judge_ahead([up], clean=costly, clean_tolerance=0.03) == "reproduced"
    assert F.judge_ahead([up], clean=F.Interval(0.0, math.nan, math.nan)) == "inconclusive"
    assert F.judge_ahead([down], clean=costly) == "not reproduced"
    assert F.judge_ahead([F.Interval(5.0, 4.0, 6.0)], threshold=3.0) == "reproduced"
    assert F.judge_ahead([F.Interval(5.0, 2.0, 6.0)], threshold=3.0) == "inconclusive"
    with pytest.raises(ValueError, match="at least one interval"):
        F.judge_ahead([])


def test_one_vocabulary_a_straddling_interval_is_inconclusive_in_every_notebook():
    """00-07 and 06 agree: no rule outside 06 calls a straddling interval 'mixed' or 'not reproduced', and every
    criterion that combines parts quotes the one rule."""
    straddle = F.Interval(0.0, -0.01, 0.01)
    assert F.judge_effect(straddle, sesoi=0.001) == F.judge_ahead([straddle]) == "inconclusive"
    assert F._combine([True, None]) == F._combine([None]) == "inconclusive"
    assert F._combine([True, False, None]) == "mixed" and F._combine([False, None]) == "not reproduced"
    for nn in ("00", "01", "02", "03", "04", "05", "07"):
        for found in F.read_findings(nn):
            assert found["verdict"] != "no difference", f"{found['id']}: 'no difference' needs a declared margin"
            if " part" in found["criterion"]:
                assert F.RULE in found["criterion"], f"{found['id']}'s criterion does not quote the one rule"


def test_tima_balance_converts_its_point_tolerance_for_the_one_rule():
    rows = _eval_rows(+0.10, clean_gain=-0.03)  # 10 points ahead under attack, 3 points behind clean
    assert [f.verdict for f in F.findings_tima_balance(rows, n_boot=500)] == ["mixed", "mixed"]
    assert [f.verdict for f in F.findings_tima_balance(rows, clean_tolerance=5.0, n_boot=500)] == ["reproduced"] * 2
    assert [f.verdict for f in F.findings_tima_balance(rows, clean_tolerance=0.05, n_boot=500)] == ["mixed"] * 2


# ------------------------------------------------------------------- 06's verdict rules (docs/VERDICT_RULES.md)
def test_effect_interval_is_the_t_interval_without_an_image_term_and_welch_satterthwaite_with_one():
    runs = [0.010, 0.014, 0.006]
    plain = F.effect_interval(runs)
    ref = F.t_interval(runs)
    assert (plain.estimate, plain.low, plain.high) == pytest.approx((ref.estimate, ref.low, ref.high))
    assert plain.df == pytest.approx(2.0) and plain.image_var == 0.0
    v_img = 2e-5  # hand computation of the two-term interval
    s2k = np.var(runs, ddof=1) / 3
    var = s2k + v_img
    df = var ** 2 / (s2k ** 2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(var)
    both = F.effect_interval(runs, v_img)
    assert (both.low, both.high, both.df) == pytest.approx((0.01 - half, 0.01 + half, df))
    assert both.p == pytest.approx(2 * stats.t.sf(0.01 / math.sqrt(var), df))
    same = F.effect_interval([0.01, 0.01, 0.01], v_img)  # identical runs: normal interval on the image term alone
    assert math.isinf(same.df) and same.high - 0.01 == pytest.approx(stats.norm.ppf(0.975) * math.sqrt(v_img))
    assert math.isnan(F.effect_interval([0.01]).low)
    wider = same.at_level(0.99)
    assert wider.low < same.low and wider.high > same.high and wider.level == 0.99


def test_a_module_with_zero_effect_and_small_noise_gets_no_difference():
    rng = np.random.default_rng(1)
    runs = rng.normal(0.0, 0.001, size=6)  # 0.1 point of seed noise around no effect
    eff = F.effect_interval(runs, 1e-6)  # image SE 0.1 point
    assert F.judge_effect(eff) == "no difference"
    assert F.judge_effect(eff, sesoi=0.0) == "inconclusive"  # without a SESOI it could never be no difference
    assert F.judge_effect(F.effect_interval(runs, 1e-4)) == "inconclusive"  # 1-point image SE: too wide to tell


def test_a_clear_effect_is_reproduced_or_not_reproduced_by_its_sign():
    up = F.effect_interval([0.030, 0.034, 0.026], 1e-6)
    assert F.judge_effect(up) == "reproduced"
    assert F.judge_effect(F.effect_interval([-0.030, -0.034, -0.026], 1e-6)) == "not reproduced"
    tiny = F.Interval(0.004, 0.002, 0.006)  # real but below the SESOI: no difference, checked first
    assert F.judge_effect(tiny) == "no difference"
    assert F.judge_effect(F.Interval(0.02, 0.005, 0.035)) == "reproduced"
    assert F.judge_effect(F.Interval(0.0, math.nan, math.nan)) == "inconclusive"
    assert F.judge_noninferior(F.Interval(0.003, -0.01, 0.019), margin=0.02) == "reproduced"
    assert F.judge_noninferior(F.Interval(0.03, 0.021, 0.04), margin=0.02) == "not reproduced"
    assert F.judge_noninferior(F.Interval(0.01, -0.01, 0.025), margin=0.02) == "inconclusive"


def test_holm_levels_and_adjusted_p_on_a_hand_checked_example():
    levels, adjusted = F.holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    # sorted: 0.005 <= .05/4 rejected; 0.01 <= .05/3 rejected; 0.03 > .05/2 stops: it and 0.04 keep .05/2
    assert levels == pytest.approx([1 - 0.05 / 3, 0.975, 0.975, 1 - 0.05 / 4])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert F.holm([0.001, 0.002], alpha=0.05)[0] == pytest.approx([0.975, 0.95])  # all rejected: 0.05/2, then 0.05
    lv, adj = F.holm([0.2, math.nan])
    assert lv == pytest.approx([0.975, 0.975]) and math.isnan(adj[1])
    # the interval at the Holm level excludes 0 exactly when Holm rejects
    effs = [F.effect_interval(r, 0.0) for r in ([0.010, 0.012, 0.011], [0.002, 0.010, -0.004])]
    lv, adj = F.holm([e.p for e in effs])
    for e, level, padj in zip(effs, lv, adj):
        a = e.at_level(level)
        assert (a.low > 0 or a.high < 0) == (padj <= 0.05)


def test_image_variance_terms_by_hand():
    v = F.paired_image_variance([0.4, 0.8], [0.5, 0.7], [100, 200], kappa=0.5)
    hand = (0.5 * (0.24 + 0.25) / 100 + 0.5 * (0.16 + 0.21) / 200) / 4
    assert v == pytest.approx(hand)
    x1, x2 = np.array([1.0, 0.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.0])
    assert F.measured_image_variance([x1, x2]) == pytest.approx((np.var(x1, ddof=1) / 4 + np.var(x2, ddof=1) / 3) / 4)
    with pytest.raises(ValueError):
        F.paired_image_variance([0.4], [0.5, 0.6], [100, 100])
