import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from nbhelpers import analysis, metrics, utils, zeroshot


def test_logit_margin_hand_case():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0], [2.0, 2.5, 0.0]])
    labels = torch.tensor([0, 2, 0])
    assert metrics.logit_margin(logits, labels).tolist() == pytest.approx([1.0, -4.0, -0.5])
    assert metrics.accuracy(logits, labels) == pytest.approx(1 / 3)


def test_pair_margins_hand_case():
    logits = torch.tensor([[3.0, 1.0, 2.0], [1.0, 1.0, 4.0], [0.0, 2.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    pm = metrics.pair_margins(logits, labels)
    assert pm[0, 1] == pytest.approx(((3 - 1) + (1 - 1)) / 2)
    assert pm[0, 2] == pytest.approx(((3 - 2) + (1 - 4)) / 2)
    assert pm[1, 0] == pytest.approx(2.0) and pm[1, 2] == pytest.approx(1.0)
    assert torch.isnan(pm[2]).all() and torch.isnan(pm.diagonal()).all()


def test_margin_offsets_recovers_a_constant_offset():
    rng = np.random.default_rng(0)
    small = rng.normal(2, 1, 200)
    rows = [pd.DataFrame({"sample": range(200), "eps": e, "margin": small - 0.5 * e}) for e in (1.0, 2.0, 4.0)]
    off = analysis.margin_offsets(pd.concat(rows))
    row = off[(off.eps_small == 1.0) & (off.eps_large == 4.0)].iloc[0]
    assert row.offset_mean == pytest.approx(-1.5)
    assert row.offset_std == pytest.approx(0.0, abs=1e-9)
    assert row.slope == pytest.approx(1.0) and row.pearson_r == pytest.approx(1.0)
    assert len(off) == 3


def test_correlate_matches_scipy_and_pair_table_shapes():
    x = np.linspace(0, 1, 50)
    y = -2 * x + np.sin(7 * x)
    c = analysis.correlate(x, y)
    assert c["pearson_r"] == pytest.approx(stats.pearsonr(x, y).statistic)
    assert c["spearman_rho"] == pytest.approx(stats.spearmanr(x, y).statistic)
    emb = torch.eye(3)
    pm = torch.tensor([[float("nan"), 1.0, 2.0], [3.0, float("nan"), 4.0], [5.0, 6.0, float("nan")]])
    table = analysis.pair_table(pm, emb, ["a", "b", "c"])
    assert len(table) == 6 and set(table.similarity) == {0.0}
    assert table[(table.true == "b") & (table.other == "c")].margin.item() == 4.0


def test_offset_between_picks_one_pair_of_margin_offsets():
    rng = np.random.default_rng(1)
    small = rng.normal(2, 1, 100)
    sweep = pd.concat([pd.DataFrame({"sample": range(100), "eps": e, "margin": small - 0.5 * e + rng.normal(0, 0.1, 100)})
                       for e in (1.0, 2.0, 4.0)])
    row = analysis.offset_between(sweep, eps_small=2.0, eps_large=4.0)
    full = analysis.margin_offsets(sweep).set_index(["eps_small", "eps_large"]).loc[(2.0, 4.0)]
    assert row.offset_mean == full.offset_mean == pytest.approx(-1.0, abs=0.05)
    with pytest.raises(ValueError, match="no eps pair"):
        analysis.offset_between(sweep, eps_small=4.0, eps_large=1.0)


def test_one_fingerprint_helper_for_tensors_and_weights():
    import hashlib

    t = torch.arange(6, dtype=torch.float32).view(2, 3)
    # a bare tensor: sha256 of its float32 bytes (the text fingerprints stored in 05's rows stay valid)
    assert utils.tensor_fingerprint(t) == hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]
    assert utils.tensor_fingerprint(t) != utils.tensor_fingerprint(t + 1)
    # a named mapping also hashes names and shapes
    assert utils.tensor_fingerprint({"w": t}) != utils.tensor_fingerprint({"v": t})
    assert utils.tensor_fingerprint({"w": t}) != utils.tensor_fingerprint({"w": t.view(3, 2)})
    lin = torch.nn.Linear(3, 2)
    assert zeroshot.model_fingerprint(lin) == utils.tensor_fingerprint(lin.state_dict())
    assert zeroshot.model_fingerprint(lin, exclude_prefix="bias") == utils.tensor_fingerprint({"weight": lin.weight})


def test_rel_spread_is_one_definition_in_the_margins_dtype():
    """Issue 18: one rel_spread (analysis), row-wise along the last axis, in the input's float dtype, NaN for
    constant small-eps margins; margin_offsets and the findings' bootstrap both report it."""
    from nbhelpers import findings

    rng = np.random.default_rng(0)
    small = rng.normal(size=(4, 300))
    large = small - 2.0 + 0.5 * rng.normal(size=(4, 300))
    rows = analysis.rel_spread(small, large)
    assert rows.shape == (4,)
    assert rows[0] == pytest.approx(np.std(large[0] - small[0], ddof=1) / np.std(small[0], ddof=1), rel=1e-12)
    assert [analysis.rel_spread(a, b) for a, b in zip(small, large)] == pytest.approx(list(rows), rel=1e-12)
    assert analysis.rel_spread(small[0], small[0] - 3.0) == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(analysis.rel_spread(np.ones(10), np.arange(10.0)))
    s32, l32 = small[0].astype(np.float32), large[0].astype(np.float32)
    assert analysis.rel_spread(s32, l32).dtype == np.float32
    sweep = pd.concat([pd.DataFrame({"sample": range(300), "eps": e, "margin": m}) for e, m in ((1.0, s32), (4.0, l32))])
    off = analysis.margin_offsets(sweep).iloc[0]
    assert off.rel_spread == analysis.rel_spread(s32, l32)
    assert findings.bootstrap_rel_spread_ci(small[0], large[0], n_boot=50).estimate == rows[0]
