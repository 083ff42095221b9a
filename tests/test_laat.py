"""LAAT in its own setting (nbhelpers.laat, notebook 07): objectives by hand, what training touches, the expansion,
the findings' arithmetic and the config. The notebook itself runs under nbval in tests/test_notebooks.py."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from nbhelpers import config, evaluation, laat, losses, models, world
from nbhelpers.zeroshot import build_class_embeddings, build_head, model_fingerprint

TEMPLATES = [world.PROMPT_TEMPLATE]


@pytest.fixture(scope="module")
def base() -> models.ClipModel:
    return models.create_model_and_transforms("mini")[0]


def test_cosine_objective_by_hand():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    features = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # cos to own anchor: 1 and 1/sqrt(2)
    labels = torch.tensor([0, 1])
    expected = ((1 - 1.0) + (1 - 1 / math.sqrt(2))) / 2
    assert laat.anchor_cosine_loss(features, anchors, labels).item() == pytest.approx(expected, abs=1e-6)
    # the other anchors do not enter: moving anchor 1 changes nothing for a sample of class 0
    assert laat.anchor_cosine_loss(features[:1], torch.tensor([[1.0, 0.0], [0.6, 0.8]]), labels[:1]).item() == \
        pytest.approx(0.0, abs=1e-7)


def test_ce_relaxation_by_hand():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    features = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1])
    s = 10.0
    # sample 0: cosines (1, 0); sample 1: (1/sqrt2, 1/sqrt2) -> CE log 2
    ce0 = -math.log(math.exp(s) / (math.exp(s) + 1.0))
    expected_ce = (ce0 + math.log(2)) / 2
    assert laat.anchor_ce_loss(features, anchors, labels, scale=s).item() == pytest.approx(expected_ce, abs=1e-6)
    cos = ((1 - 1.0) + (1 - 1 / math.sqrt(2))) / 2
    both = laat.laat_objective(features, anchors, labels, relax=True, scale=s, ce_weight=0.5).item()
    assert both == pytest.approx(cos + 0.5 * expected_ce, abs=1e-6)
    assert laat.laat_objective(features, anchors, labels, relax=False, scale=s).item() == pytest.approx(cos, abs=1e-6)


def test_expansion_keeps_count_and_dimension_and_moves_the_centre(base):
    names = world.TASKS[world.FINETUNE_TASK].classnames()
    original = laat.training_anchors(base, names, TEMPLATES, expand=False, spread=1.5)
    expanded = laat.training_anchors(base, names, TEMPLATES, expand=True, spread=1.5)
    assert expanded.shape == original.shape == (48, 128)
    assert torch.allclose(expanded.norm(dim=-1), torch.ones(48), atol=1e-5)
    centre = F.normalize(original.mean(0), dim=0)
    assert (expanded @ centre).mean() < (original @ centre).mean() - 0.1  # anchors moved away from the old centre
    assert expanded.mean(0).norm() < original.mean(0).norm()
    geometry = laat.anchor_geometry(base, names, TEMPLATES, spread=1.5)
    assert geometry.loc["expanded", "mean_pair_cos"] < geometry.loc["original", "mean_pair_cos"]
    assert torch.equal(laat.training_anchors(base, names, TEMPLATES, expand=True, spread=1.0),
                       losses.laat_expand(original, spread=1.0))


def _tiny_data(n: int = 16) -> tuple:
    images, labels = world.generate_task(world.FINETUNE_TASK, n, split="train", seed=0)
    return images, labels, world.TASKS[world.FINETUNE_TASK].classnames(), TEMPLATES


def test_training_changes_only_the_backbone(base):
    text_before = {k: v.clone() for k, v in base.state_dict().items()}
    images, labels, names, templates = _tiny_data()
    anchors = laat.training_anchors(base, names, templates, expand=True, spread=1.5)
    anchors_before = anchors.clone()
    run = laat.LAATRun(expand=True, relax=True, steps=2, batch_size=8, warmup_steps=1)
    fresh = laat.SmallConvNet(embed_dim=anchors.shape[1], width=run.width,
                              seed=world.derive_seed(run.seed, "laat-init"))
    result = laat.train_laat(run, images=images, labels=labels, anchors=anchors, logit_scale=base.logit_scale())
    after = result.model.visual.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in fresh.state_dict().items()), "the backbone must change"
    assert all(torch.equal(base.state_dict()[k], v) for k, v in text_before.items()), "CLIP changed"
    assert torch.equal(anchors, anchors_before) and torch.equal(result.anchors, anchors_before), "anchors changed"
    assert not any(p.requires_grad and p.grad is not None for p in base.parameters())
    assert not result.model.training and len(result.history) == 2
    assert set(result.history.columns) >= {"step", "eps", "loss", "adv_accuracy", "cos_to_anchor"}


def test_training_is_deterministic_and_seeded(base):
    images, labels, names, templates = _tiny_data()
    anchors = laat.training_anchors(base, names, templates, expand=False, spread=1.5)
    kw = dict(images=images, labels=labels, anchors=anchors, logit_scale=base.logit_scale())
    a = laat.train_laat(laat.LAATRun(expand=False, relax=False, steps=2, batch_size=8), **kw)
    b = laat.train_laat(laat.LAATRun(expand=False, relax=False, steps=2, batch_size=8), **kw)
    c = laat.train_laat(laat.LAATRun(expand=False, relax=False, steps=2, batch_size=8, seed=1), **kw)
    fa, fb, fc = (model_fingerprint(r.model.visual) for r in (a, b, c))
    assert fa == fb and fa != fc


def test_radius_ramps_to_the_training_radius(base):
    images, labels, names, templates = _tiny_data()
    anchors = laat.training_anchors(base, names, templates, expand=False, spread=1.5)
    run = laat.LAATRun(expand=False, relax=True, steps=4, batch_size=8, train_eps=4.0, eps_ramp=0.5)
    r = laat.train_laat(run, images=images, labels=labels, anchors=anchors, logit_scale=base.logit_scale())
    assert r.history.eps.tolist() == pytest.approx([2.0, 4.0, 4.0, 4.0])


def test_backbone_plugs_into_the_evaluation(base):
    images, labels, names, templates = _tiny_data()
    anchors = laat.training_anchors(base, names, templates, expand=True, spread=1.5)
    run = laat.LAATRun(expand=True, relax=False, steps=1, batch_size=8)
    result = laat.train_laat(run, images=images, labels=labels, anchors=anchors, logit_scale=base.logit_scale())
    em = laat.eval_model(result, base, name="x")
    # the expanded arm scores each label space against its own expanded anchors from the frozen text tower
    shape_names = world.TASKS["shapes"].classnames()
    expected = losses.laat_expand(build_class_embeddings(base, shape_names, TEMPLATES), spread=run.spread)
    assert torch.allclose(em.embed(shape_names, TEMPLATES), expected)
    rows = evaluation.evaluate({"x": em}, profile="mini", datasets=["shapes"], attacks=["pgd2"], eps_list=[4.0], n=8,
                               batch_size=8)
    assert list(rows.attack) == ["clean", "pgd2"] and set(rows.arm) == {"expanded cos"}
    head = build_head(result.model, expected)
    with torch.no_grad():
        logits = head(images[:4])
    assert logits.shape == (4, 8) and logits.abs().max() <= base.logit_scale() + 1e-4


def _seed_rows() -> pd.DataFrame:
    """A synthetic per-seed table: expansion adds 2 points robust everywhere, CE costs 1 point with noise."""
    rows = []
    for seed in range(3):
        for arm, (expand, relax) in laat.ARMS.items():
            robust = 0.20 + 0.02 * expand - 0.01 * relax + 0.001 * seed * relax
            rows.append({"arm": arm, "expand": expand, "relax": relax, "train_seed": seed, "clean": 0.4 + 0.02 * expand,
                         "robust": robust})
    return pd.DataFrame(rows)


def test_findings_follow_the_paired_seed_differences():
    table = _seed_rows()
    diffs = laat.factor_effects(table, "expand")
    assert len(diffs) == 6 and diffs.robust.to_numpy() == pytest.approx([0.02] * 6)
    found = {f.id: f for f in laat.findings_laat(table, attack_label="PGD-10", eps=4.0)}
    assert found["07_expansion"].verdict == "reproduced"
    assert found["07_relaxation"].verdict == "not reproduced"
    assert found["07_expansion"].estimate == pytest.approx(2.0)
    flipped = table.assign(robust=lambda d: d.robust - 0.04 * d.expand)
    assert {f.id: f.verdict for f in laat.findings_laat(flipped, attack_label="PGD-10", eps=4.0)}["07_expansion"] == \
        "not reproduced"


def test_precondition_finding_against_chance():
    rows = pd.DataFrame([{"arm": arm, "train_seed": s, "accuracy": acc + 0.001 * s, "num_classes": 48}
                         for arm in laat.ARMS for s in range(3) for acc in [0.2]])
    assert laat.precondition_finding(rows, eps=4.0, attack_label="PGD-10").verdict == "reproduced"
    low = rows.assign(accuracy=0.03 + 0.001 * rows.train_seed)
    assert laat.precondition_finding(low, eps=4.0, attack_label="PGD-10").verdict == "not reproduced"


def test_config_validates_early():
    cfg = config.LAATConfig()
    assert cfg.eval_datasets() == list(world.ZERO_SHOT_TASKS) and cfg.claim_eps in cfg.eps_list
    for bad, message in [({"train_seeds": [0]}, "at least two distinct seeds"),
                         ({"claim_eps": 2.0}, "claim_eps"),
                         ({"profile": "paper"}, "mini profile only"),
                         ({"probe_eps": [4.0]}, "probe_eps"),
                         ({"datasets": ["shapes"], "strong_datasets": ["patterns"]}, "strong_datasets"),
                         ({"laat_eps": -1.0}, "1/255 units")]:
        with pytest.raises(config.ConfigError, match=message):
            config.LAATConfig(**bad)
    run = laat.run_for(cfg, expand=True, relax=False, seed=2)
    assert (run.steps, run.batch_size, run.train_eps, run.spread, run.ce_scale, run.arm) == \
        (cfg.laat_steps, cfg.laat_batch_size, cfg.laat_eps, cfg.spread, cfg.ce_scale, "expanded cos")
