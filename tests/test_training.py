"""The one engine: every method trains, touches only what it tunes, resumes exactly, and runs under DDP."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from nbhelpers import models, training
from nbhelpers.config import ConfigError
from nbhelpers.training import FinetuneConfig

SMALL = dict(finetune_steps=3, train_batch_size=16, warmup_steps=1, checkpoint_every=100, device="cpu")


@pytest.fixture(scope="module")
def base_state():
    model, _ = models.create_model_and_transforms("mini")
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", sorted(training.METHODS))
def test_each_method_trains_and_changes_only_the_image_tower(method, base_state, tmp_path):
    cfg = FinetuneConfig.from_params(method=method, **SMALL)
    res = training.finetune(cfg, out=tmp_path / "run.pt", progress=False)
    assert len(res.history) == 3 and res.history.loss.notna().all()
    changed = {k for k, v in res.model.state_dict().items() if not torch.equal(v, base_state[k])}
    assert changed, "training must change something"
    assert all(k.startswith("clip.visual.") for k in changed), sorted(changed)[:5]
    assert not any("running_" in k for k in changed), "BatchNorm statistics must stay frozen"
    assert all(p.grad is None or not p.requires_grad for p in res.model.parameters())


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    cfg = FinetuneConfig.from_params(method="pmg_aft", **{**SMALL, "finetune_steps": 4})
    straight = training.finetune(cfg, out=tmp_path / "a.pt", progress=False)
    training.finetune(cfg, out=tmp_path / "b.pt", stop_after=2, progress=False)
    assert training.load_checkpoint(tmp_path / "b.pt")["step"] == 2
    resumed = training.finetune(cfg, out=tmp_path / "b.pt", progress=False)
    assert resumed.resumed_from == 2
    for (k, a), b in zip(straight.model.visual.state_dict().items(), resumed.model.visual.state_dict().values()):
        assert torch.equal(a, b), k
    assert resumed.history.loss.tolist() == pytest.approx(straight.history.loss.tolist())


def test_two_gloo_processes_match_one(tmp_path):
    args = ["--method", "tecoa", "--finetune_steps", "2", "--train_batch_size", "16", "--warmup_steps", "1", "--device", "cpu"]
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "nbhelpers.training", *args, "--out", str(tmp_path / "one.pt")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29517", "-m", "nbhelpers.training", *args, "--out", str(tmp_path / "two.pt")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a = training.load_checkpoint(tmp_path / "one.pt")["visual"]
    b = training.load_checkpoint(tmp_path / "two.pt")["visual"]
    moved = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert moved < 1e-4, moved


@pytest.mark.parametrize("params, message", [
    ({"method": "trades"}, "'method' = 'trades' is not allowed"),
    ({"pmg_alpha": -1.0}, "'pmg_alpha' must be >= 0"),
    ({"train_eps": -1.0}, "'train_eps' is in 1/255 units"),
    ({"text_source": "iat"}, "needs 'iat_projection'"),
])
def test_bad_training_input_fails_before_training(params, message):
    with pytest.raises(ConfigError, match=message):
        FinetuneConfig.from_params(**params)


def test_checkpoint_from_another_architecture_is_rejected(tmp_path):
    path = tmp_path / "vit.pt"
    torch.save({"model_name": "ViT-B-32", "visual": {}, "step": 1, "config": "{}"}, path)
    with pytest.raises(ValueError, match="holds a 'ViT-B-32' checkpoint"):
        training.load_checkpoint(path, expect_model="mini-clip")


def test_bf16_autocast_path_trains(tmp_path):
    cfg = FinetuneConfig.from_params(method="tecoa", amp=True, **SMALL)
    res = training.finetune(cfg, out=tmp_path / "amp.pt", progress=False)
    assert res.history.loss.notna().all() and (res.history.loss < 20).all()


def test_iat_tunes_only_the_text_projection(base_state, tmp_path):
    from nbhelpers import text_tuning, world

    model, _ = models.create_model_and_transforms("mini")
    x, _ = world.generate_task(world.FINETUNE_TASK, 64, split="train")
    cfg = text_tuning.IATConfig(iat_steps=5)
    res = text_tuning.tune_text(model, cfg, classnames=world.TASKS[world.FINETUNE_TASK].classnames(),
                                templates=[world.PROMPT_TEMPLATE], images=x, progress=False)
    changed = {k for k, v in res.model.state_dict().items() if not torch.equal(v, base_state[k])}
    assert changed == {"clip.text_projection"}
    assert res.history.mhe.iloc[-1] < res.history.mhe.iloc[0]
    path = text_tuning.save_projection(res.model, tmp_path / "iat.safetensors", config={})
    text_model = training.with_iat_projection(model, path)
    assert torch.equal(text_model.clip.text_projection, res.model.clip.text_projection)
    assert torch.equal(model.clip.text_projection, base_state["clip.text_projection"])  # original untouched
    assert text_model.clip.visual is model.clip.visual


def test_cache_key_follows_config_and_engine_version(monkeypatch):
    """A cached model is reused only for the same config and the same engine version (code changes that alter the
    trained weights bump training.ENGINE_VERSION, so stale cached weights are never silently reused)."""
    from nbhelpers import training

    cfg = training.FinetuneConfig.from_params(method="tai")
    key = training.cache_key(cfg)
    assert training.cache_key(training.FinetuneConfig.from_params(method="tai", device="cpu", checkpoint_every=7)) == key
    assert training.cache_key(training.FinetuneConfig.from_params(method="tai", margin_offset=-0.1)) != key
    monkeypatch.setattr(training, "ENGINE_VERSION", training.ENGINE_VERSION + 1)
    assert training.cache_key(cfg) != key
