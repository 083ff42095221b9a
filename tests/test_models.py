import time

import pytest
import torch

from nbhelpers import _compat, models, paths, pretrain, utils, world
from nbhelpers.zeroshot import ZeroShotClassifier, build_class_embeddings, build_head


def test_normalisation_is_inside_the_model(mini_model):
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        ours = mini_model.encode_image(x)
        raw = mini_model.clip.encode_image((x - mini_model.mean) / mini_model.std, normalize=True)
    assert torch.allclose(ours, raw, atol=1e-6)


def test_zero_shot_head_uses_cached_text_embeddings(mini_model):
    names = world.TASKS["shapes"].classnames()
    e1 = build_class_embeddings(mini_model, names, [world.PROMPT_TEMPLATE])
    calls = []
    handle = mini_model.clip.transformer.register_forward_hook(lambda *a: calls.append(1))
    try:
        e2 = build_class_embeddings(mini_model, names, [world.PROMPT_TEMPLATE])
        head = build_head(mini_model, build_class_embeddings(mini_model, names, [world.PROMPT_TEMPLATE]))
        head(torch.rand(2, 3, 32, 32))
    finally:
        handle.remove()
    assert calls == [] and torch.equal(e1, e2)
    assert e1.shape == (8, 128) and torch.allclose(e1.norm(dim=1), torch.ones(8), atol=1e-5)


def test_text_embedding_cache_sees_a_changed_text_projection(mini_model):
    import copy

    names = world.TASKS["shapes"].classnames()
    before = build_class_embeddings(mini_model, names, [world.PROMPT_TEMPLATE])
    tuned = copy.deepcopy(mini_model)
    with torch.no_grad():
        tuned.clip.text_projection.mul_(-1.0)
    after = build_class_embeddings(tuned, names, [world.PROMPT_TEMPLATE])
    assert torch.allclose(after, -before, atol=1e-5)


def test_committed_checkpoint_matches_its_sidecar():
    import json

    record = json.loads(paths.MINI_CHECKPOINT.with_suffix(".json").read_text())
    assert utils.sha256_file(paths.MINI_CHECKPOINT) == record["sha256"]


def test_pretraining_is_deterministic_and_roundtrips(tmp_path):
    m1, l1 = pretrain.train_mini_clip(steps=3, batch_size=32, warmup=1, progress=False)
    m2, l2 = pretrain.train_mini_clip(steps=3, batch_size=32, warmup=1, progress=False)
    assert l1 == l2
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    path = pretrain.save_mini_clip(m1, tmp_path / "m.safetensors", metadata={"steps": 3})
    loaded = models.load_mini_clip(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), m1.state_dict().values()))
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind


def test_checkpoint_of_another_architecture_is_rejected(tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(2)}, str(bad), metadata={"model_name": "ViT-B-32"})
    with pytest.raises(ValueError, match="not a mini-clip checkpoint"):
        models.load_mini_clip(bad)


def test_unknown_profile_is_rejected():
    with pytest.raises(ValueError, match="unknown profile 'big'"):
        models.create_model_and_transforms("big")


def test_paper_profile_missing_weights_fail_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(models, "_openai_weights_cached", lambda: None)
    t0 = time.time()
    with pytest.raises(FileNotFoundError, match="ViT-B-32 weights .openai. are not on this machine"):
        models.create_model_and_transforms("paper")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.create_model_and_transforms("paper", checkpoint=tmp_path / "missing.pt")
    assert time.time() - t0 < 5


def test_paper_vit_b32_path_with_random_weights():
    model, preprocess = models.create_model_and_transforms("paper", pretrained="none")
    assert model.image_size == 224 and sum(p.numel() for p in model.parameters()) > 140e6
    from PIL import Image

    x = preprocess(Image.new("RGB", (300, 260), (200, 10, 10)))
    assert x.shape == (3, 224, 224) and 0 <= float(x.min()) and float(x.max()) <= 1
    emb = build_class_embeddings(model, ["cat", "dog"], ["This is a photo of a {}"], use_cache=False)
    head = ZeroShotClassifier(model, emb, logit_scale=100.0)
    with torch.no_grad():
        logits = head(x[None])
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()


def test_broken_torch_pair_gives_a_clear_import_error(monkeypatch):
    class NoOps:
        def __getattr__(self, name):
            raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(torch.ops, "torchvision", NoOps())
    with pytest.raises(_compat.BrokenTorchPairError, match="do not match.*requirements/torch.txt"):
        _compat.check_torch_pair()
