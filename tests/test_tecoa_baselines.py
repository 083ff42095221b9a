"""TeCoA's motivating baselines as methods of the engine (issue 23): one-hot adversarial training through a linear
head, CoAdv (image-image contrastive adversarial training) and partial fine-tuning."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from nbhelpers import attacks, findings, losses, methods, models, training
from nbhelpers.config import ConfigError, FinetuneConfig
from nbhelpers.utils import pack_mask

SMALL = dict(finetune_steps=2, train_batch_size=16, warmup_steps=1, finetune_lr=1e-3, checkpoint_every=100)


def test_coadv_loss_by_hand():
    """Two images, identity embeddings, temperature 1: each row is softmax([1, 0]) -> log(1 + e^-1)."""
    eye = torch.eye(2)
    assert math.isclose(float(losses.coadv_loss(eye, eye, temperature=1.0)), math.log(1 + math.exp(-1)), rel_tol=1e-6)
    swapped = eye.flip(0)  # every positive is now the least similar image
    assert math.isclose(float(losses.coadv_loss(swapped, eye, temperature=1.0)), math.log(1 + math.e), rel_tol=1e-6)
    assert float(losses.coadv_loss(eye, eye, temperature=0.1)) < float(losses.coadv_loss(eye, eye, temperature=1.0))


def test_contrastive_attack_raises_coadv_and_stays_in_the_ball(mini_model):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 32, 32, generator=g)
    encoder = training.ImageEncoder(mini_model)
    with torch.no_grad():
        clean = encoder(x)
    adv = attacks.contrastive_pgd_attack(encoder, x, clean, temperature=0.1, eps=4 / 255, steps=5,
                                         generator=torch.Generator().manual_seed(1))
    assert float((adv - x).abs().max()) <= 4 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert float(losses.coadv_loss(encoder(adv), clean)) > float(losses.coadv_loss(encoder(x), clean))
    with pytest.raises(ValueError, match="targets must be"):
        attacks.contrastive_pgd_attack(encoder, x, clean[:3], temperature=0.1, eps=4 / 255)


@pytest.fixture(scope="module")
def base():
    return models.create_model_and_transforms("mini")[0]


def _tower_changes(run, base) -> list[bool]:
    return [not torch.equal(a, b) for a, b in zip(run.model.visual.parameters(), base.visual.parameters())]


def test_partial_fine_tuning_moves_only_the_last_tensors(base, tmp_path):
    cfg = FinetuneConfig.from_params(method="tecoa_partial", partial_last_n=4, **SMALL)
    run = training.finetune(cfg, out=tmp_path / "partial.pt", progress=False)
    changed = _tower_changes(run, base)
    assert not any(changed[:-4]) and any(changed[-4:])
    assert all(torch.equal(a, b) for a, b in zip(run.model.clip.transformer.parameters(),
                                                 base.clip.transformer.parameters()))
    with pytest.raises(ConfigError, match="partial_last_n"):
        FinetuneConfig.from_params(method="tecoa_partial", partial_last_n=0)


def test_onehot_trains_tower_and_head_and_resumes_with_its_head(base, tmp_path):
    cfg = FinetuneConfig.from_params(method="onehot_at", **SMALL)
    whole = training.finetune(cfg, out=tmp_path / "whole.pt", progress=False)
    assert any(_tower_changes(whole, base))
    assert torch.equal(whole.model.clip.text_projection, base.clip.text_projection)  # the text side is untouched
    state = training.load_checkpoint(tmp_path / "whole.pt")
    head = training.make_linear_head(cfg, torch.zeros(len(state["head"]["bias"]), state["head"]["weight"].shape[1]))
    assert not torch.equal(state["head"]["weight"], head.weight)  # the head trained (from its seeded start)
    training.finetune(cfg, out=tmp_path / "cut.pt", stop_after=1, progress=False)
    resumed = training.finetune(cfg, out=tmp_path / "cut.pt", progress=False)
    assert resumed.resumed_from == 1
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.visual.parameters(), whole.model.visual.parameters()))
    assert torch.equal(training.load_checkpoint(tmp_path / "cut.pt")["head"]["weight"], state["head"]["weight"])


def test_coadv_is_label_free_and_leaves_the_text(base, tmp_path, monkeypatch):
    """CoAdv never reads the labels: the same run with shuffled labels gives the same weights."""
    cfg = FinetuneConfig.from_params(method="coadv", **SMALL)
    first = training.finetune(cfg, out=tmp_path / "a.pt", progress=False)
    real_batch = training.TrainData.batch

    def shuffled(self, step, batch_size):
        x, y = real_batch(self, step, batch_size)
        return x, y.flip(0)
    monkeypatch.setattr(training.TrainData, "batch", shuffled)
    second = training.finetune(cfg, out=tmp_path / "b.pt", progress=False)
    assert any(_tower_changes(first, base))
    assert all(torch.equal(a, b) for a, b in zip(first.model.visual.parameters(), second.model.visual.parameters()))
    assert torch.equal(first.model.clip.text_projection, base.clip.text_projection)
    assert methods.get("coadv").training_attack is methods.PGD_CONTRASTIVE


def _rows(acc: dict[tuple[str, str], float], n: int = 200) -> pd.DataFrame:
    """Fake evaluation rows: per (model, attack) a correctness mask with the given accuracy on two datasets."""
    out = []
    for (model, attack), p in acc.items():
        for d, shift in (("shapes", 0), ("objects", 7)):
            bits = (np.arange(n) + shift) % 100 < round(100 * p)
            out.append({"model": model, "model_label": model, "dataset": d, "attack": attack,
                        "eps": 0.0 if attack == "clean" else 4.0, "n": n, "correct": pack_mask(bits),
                        "zero_shot": True})
    return pd.DataFrame(out)


def test_onehot_finding_verdicts():
    loses = _rows({("tecoa", "clean"): 0.6, ("tecoa", "pgd10"): 0.4, ("onehot_at", "clean"): 0.2,
                   ("onehot_at", "pgd10"): 0.1})
    f = findings.finding_onehot_loses_zero_shot(loses, n_boot=300)
    assert f.verdict == findings.REPRODUCED and f.estimate == pytest.approx(30.0)
    wins = _rows({("tecoa", "clean"): 0.6, ("tecoa", "pgd10"): 0.2, ("onehot_at", "clean"): 0.6,
                  ("onehot_at", "pgd10"): 0.5})
    assert findings.finding_onehot_loses_zero_shot(wins, n_boot=300).verdict == findings.NOT_REPRODUCED
