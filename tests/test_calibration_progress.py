"""`python -m nbhelpers.study_runs --plan` before a user has anything: the calibration times a model that needs no
weights file (random weights of the same architecture and activation time the same), says on a CPU up front about
how long it will take, and prints a line at every stage."""
from __future__ import annotations

import functools
import types

import pytest

from nbhelpers import models, paths, study_runs, text_tuning, training, world
from nbhelpers.config import StudyConfig

SMALL = dict(finetune_steps=20, warmup_steps=1, train_batch_size=4, batch_size=4, val_images=8, test_images=8,
             strong_images=4, ablation_images=4, pgd_steps=2, iat_steps=2, iat_images=16, device="cpu")


class _Built(Exception):
    """Raised by the stand-in of build_open_clip, carrying what it was asked for."""


@pytest.mark.parametrize(("pretrained", "checkpoint", "quick"),
                         [("auto", "", True), ("openai", "", True), ("none", "", False), ("laion2b_s34b_b79k", "", False),
                          ("none", "/x/tecoa.pth.tar", True)])
def test_paper_timing_model_needs_no_weights_and_keeps_the_activation(monkeypatch, pretrained, checkpoint, quick):
    monkeypatch.setattr(models, "_openai_weights_cached", lambda: None)  # as on a machine without the weights
    if pretrained == "auto":
        with pytest.raises(FileNotFoundError, match="not on this machine"):
            models.create_model_and_transforms("paper", pretrained="auto")

    def build(model, **kw):
        raise _Built((model, kw))

    monkeypatch.setattr(models, "build_open_clip", build)  # what is built, without building it (seconds)
    with pytest.raises(_Built) as built:
        models.timing_model("paper", pretrained=pretrained, checkpoint=checkpoint)
    model, kw = built.value.args[0]
    assert model == "ViT-B-32" and kw["pretrained"] == "none" and kw["quick_gelu"] == quick
    assert "checkpoint" not in kw


def test_calibration_estimate_grows_with_the_work():
    cfg = StudyConfig(**SMALL)
    one = study_runs.calibration_estimate(cfg, 0.5, n_engines=1, train_steps=1, warmup=0, attack_steps=1)
    assert one == pytest.approx(4 * (2 + 2) * 0.5 + 4 * 0.5 * 2 + 1.0)
    assert study_runs.calibration_estimate(cfg, 0.5, n_engines=5, train_steps=2, warmup=1, attack_steps=1) > 5 * one


def test_calibration_says_how_long_it_will_take_and_reports_each_stage(monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(training, "_mini_train_pool", functools.lru_cache(maxsize=4)(
        lambda task, seed: world.generate_task(task, 64, split="train", seed=seed)))
    monkeypatch.setattr(study_runs, "_train_step_seconds", lambda *a, **k: 0.25)  # the steps are timed elsewhere
    monkeypatch.setattr(text_tuning, "tune_text", lambda *a, **k: types.SimpleNamespace(seconds=0.5))
    lines: list[str] = []
    cal = study_runs.calibrate_study(StudyConfig(**SMALL), device="cpu", train_steps=1, warmup=0, attack_steps=1,
                                     engines=["tecoa", "tai"], log=lines.append)
    assert lines[0].startswith("calibrating on cpu: mini-clip at 32 px")
    assert "will take roughly" in lines[1] and "per image" in lines[1]
    assert [line.split("(")[0].strip() for line in lines[2:4]] == ["training step 1/2", "training step 2/2"]
    assert "0.25 s" in lines[2] and cal.train_step_seconds == {"tecoa": 0.25, "tai": 0.25}
    assert any(line.strip().startswith("IAT step") and "0.5 s" in line for line in lines)
    assert "calibrated in" in lines[-1] and cal.weights == "its own weights"
    assert not (tmp_path / "cache").exists()
