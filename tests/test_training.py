"""The one engine: every method trains, touches only what it tunes, resumes exactly, and runs under DDP."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from nbhelpers import config, losses, methods, models, suite, text_tuning, training, world
from nbhelpers.config import ConfigError, EvaluationConfig
from nbhelpers.training import FinetuneConfig
from nbhelpers.zeroshot import ZeroShotClassifier, build_class_embeddings

SMALL = dict(finetune_steps=3, train_batch_size=16, warmup_steps=1, checkpoint_every=100, device="cpu")


@pytest.fixture(scope="module")
def base_state():
    model, _ = models.create_model_and_transforms("mini")
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", sorted(methods.engine_names()))
def test_each_method_trains_and_changes_only_the_image_tower(method, base_state, tmp_path, monkeypatch):
    steps: list[tuple[set[str], set[str]]] = []  # per step: (parameters that require a gradient, that got one)
    real_step = training.train_step

    def spying_step(engine: training.Engine, step: int, *args: torch.Tensor) -> torch.Tensor:
        loss = real_step(engine, step, *args)
        named = list(engine.attack_head.model.named_parameters())  # the student being trained
        steps.append(({n for n, p in named if p.requires_grad}, {n for n, p in named if p.grad is not None}))
        return loss

    monkeypatch.setattr(training, "train_step", spying_step)
    cfg = FinetuneConfig.from_params(method=method, **SMALL)
    res = training.finetune(cfg, out=tmp_path / "run.pt", progress=False)
    assert len(res.history) == 3 and res.history.loss.notna().all()
    changed = {k for k, v in res.model.state_dict().items() if not torch.equal(v, base_state[k])}
    assert changed, "training must change something"
    assert all(k.startswith("clip.visual.") for k in changed), sorted(changed)[:5]
    assert not any("running_" in k for k in changed), "BatchNorm statistics must stay frozen"
    tower = [n for n, _ in res.model.named_parameters() if n.startswith("clip.visual.")]
    # the image tower is trainable: all of it, or its last partial_last_n tensors (partial fine-tuning)
    visual = set(tower[-cfg.partial_last_n:]) if methods.get(method).trainable == "last_n" else set(tower)
    assert len(steps) == 3
    for trainable, graded in steps:  # during training: exactly those are trainable, and gradients reach them
        assert trainable == visual, sorted(trainable ^ visual)[:5]
        assert graded and graded <= visual, sorted(graded - visual)[:5]
    assert not any(p.requires_grad for p in res.model.parameters()), "the returned model must be frozen"


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
    args = ["--method", "tecoa", "--finetune_steps", "2", "--train_batch_size", "16", "--warmup_steps", "1",
            "--device", "cpu", "--finetune_lr", "0.001"]
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


def test_cache_key_follows_config_and_numerics_versions(monkeypatch):
    """A cached model is reused only for the same config and the same numerics versions (code changes that alter
    the trained weights bump a NUMERICS_VERSION, so stale cached weights are never silently reused)."""
    cfg = training.FinetuneConfig.from_params(method="tai")
    key = training.cache_key(cfg)
    assert training.cache_key(training.FinetuneConfig.from_params(method="tai", device="cpu", checkpoint_every=7)) == key
    assert training.cache_key(training.FinetuneConfig.from_params(method="tai", margin_offset=-0.1)) != key
    for module in (training, training.losses, training.attacks, training.zeroshot):
        with monkeypatch.context() as m:
            m.setattr(module, "NUMERICS_VERSION", module.NUMERICS_VERSION + 1)
            assert training.cache_key(cfg) != key, module.__name__
    assert training.cache_key(cfg) == key


# ------------------------------------------------------------------------------ FARE's label-free training attack


@pytest.fixture(scope="module")
def fresh_base():
    """A mini CLIP of this module's own (engines freeze its flags, as finetune does)."""
    return models.create_model_and_transforms("mini")[0]


@pytest.fixture(scope="module")
def train_batch():
    """A batch of the fine-tuning task: images (32, 3, 32, 32), labels (32,), class names, templates."""
    x, y = world.generate_task(world.FINETUNE_TASK, 32, split="train", seed=3)
    return x, y, world.TASKS[world.FINETUNE_TASK].classnames(), [world.PROMPT_TEMPLATE]


def _engine(cfg: FinetuneConfig, base: models.ClipModel, emb: torch.Tensor) -> training.Engine:
    """An engine set up as finetune sets it up (student copy, frozen teacher, SGD on the image tower)."""
    student = copy.deepcopy(base).eval()
    for name, p in student.named_parameters():
        p.requires_grad_(name.startswith("clip.visual."))
    teacher = ZeroShotClassifier(base, emb).eval() if methods.get(cfg.method).needs_teacher else None
    for p in base.parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=cfg.finetune_lr,
                          momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return training.make_engine(cfg, student, emb, opt, teacher=teacher, scale=base.logit_scale())


ATTACK = dict(train_eps=2.0, train_pgd_steps=3, **SMALL)


def test_fare_attack_ignores_labels_where_tecoa_attack_uses_them(fresh_base, train_batch):
    x, y, classnames, templates = train_batch
    emb = build_class_embeddings(fresh_base, classnames, templates)
    other = (y + 1) % len(classnames)  # every label changed
    noise = 2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 1
    adv = {}
    for method in ("fare", "tecoa"):
        engine = _engine(FinetuneConfig.from_params(method=method, **ATTACK), fresh_base, emb)
        adv[method] = training.training_attack(engine, x, y, noise)
        relabelled = training.training_attack(engine, x, other, noise)
        assert torch.equal(adv[method], relabelled) == (method == "fare"), method
    assert not torch.equal(adv["fare"], adv["tecoa"])


def test_fare_attack_climbs_fares_own_loss_more_than_the_ce_attack(fresh_base, train_batch):
    """At 2-3 steps both attacks move the embeddings about as far on this task; at 10 steps FARE's, which ascends
    the embedding distance itself, is clearly ahead (882 vs 727 per sample when written)."""
    x, y, classnames, templates = train_batch
    emb = build_class_embeddings(fresh_base, classnames, templates)
    strong = {**ATTACK, "train_eps": 4.0, "train_pgd_steps": 10}
    engine = _engine(FinetuneConfig.from_params(method="fare", **strong), fresh_base, emb)
    ce_engine = _engine(FinetuneConfig.from_params(method="tecoa", **strong), fresh_base, emb)
    noise = 2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 1
    targets = training.fare_targets(engine, x)
    with torch.no_grad():
        fare_adv = losses.fare_loss(engine.features(training.training_attack(engine, x, y, noise)), targets)
        ce_adv = losses.fare_loss(engine.features(training.training_attack(ce_engine, x, y, noise)), targets)
        clean = losses.fare_loss(engine.features(x), targets)
    assert clean < 1e-6 < ce_adv  # the student starts at the pre-trained weights
    assert fare_adv > 1.1 * ce_adv, (float(fare_adv), float(ce_adv))


def test_fare_training_step_does_not_depend_on_labels(fresh_base, train_batch):
    x, y, classnames, templates = train_batch
    emb = build_class_embeddings(fresh_base, classnames, templates)
    cfg = FinetuneConfig.from_params(method="fare", **ATTACK)
    noise = 2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 1
    a, b = _engine(cfg, fresh_base, emb), _engine(cfg, fresh_base, emb)
    loss_a = training.train_step(a, 0, x, y, noise)
    loss_b = training.train_step(b, 0, x, (y + 1) % len(classnames), noise)
    assert torch.equal(loss_a, loss_b)
    trained_a, trained_b = (e.attack_head.model.visual.state_dict() for e in (a, b))
    assert all(torch.equal(v, trained_b[k]) for k, v in trained_a.items())
    assert any(not torch.equal(trained_a[k], v) for k, v in fresh_base.visual.state_dict().items()), "must train"


# ------------------------------------------------------------------------------ iat_tecoa trains against IAT text


def _perturbed_projection(path: Path) -> Path:
    """An IAT-style projection file: the base projection, moved a little."""
    model = models.create_model_and_transforms("mini")[0]
    with torch.no_grad():
        model.clip.text_projection.add_(0.05 * torch.randn_like(model.clip.text_projection))
    return text_tuning.save_projection(model, path, config={})


def test_iat_tecoa_is_tecoa_trained_against_the_iat_text(fresh_base, tmp_path, monkeypatch):
    path = _perturbed_projection(tmp_path / "iat.safetensors")
    ev = EvaluationConfig.from_params(finetune_steps=1, train_batch_size=16, warmup_steps=1, device="cpu")
    cfgs = suite.finetune_configs(ev, ["iat_tecoa", "tecoa"], iat_path=path)
    iat_cfg = cfgs["iat_tecoa"]
    assert (iat_cfg.method, iat_cfg.text_source, iat_cfg.iat_projection) == ("tecoa", "iat", str(path))
    assert cfgs["tecoa"].text_source == "original"
    assert training.cache_key(iat_cfg) != training.cache_key(cfgs["tecoa"])
    data = training.TrainData(iat_cfg)
    iat_text = build_class_embeddings(training.with_iat_projection(fresh_base, path), data.classnames, data.templates)
    original = build_class_embeddings(fresh_base, data.classnames, data.templates)
    assert not torch.allclose(iat_text, original, atol=1e-3)
    assert torch.equal(training.class_embeddings_for(iat_cfg, fresh_base, data.classnames, data.templates,
                                                     device="cpu"), iat_text)
    seen = {}
    real_make_engine = training.make_engine

    def spy(*args, **kwargs):
        seen["engine"] = real_make_engine(*args, **kwargs)
        return seen["engine"]

    monkeypatch.setattr(training, "make_engine", spy)
    training.finetune(iat_cfg, out=tmp_path / "run.pt", progress=False)
    engine = seen["engine"]
    assert torch.equal(engine.class_embeddings, iat_text)  # the objective's logits
    assert torch.allclose(engine.attack_head.class_embeddings, iat_text, atol=1e-6)  # the training attack's head


# ------------------------------------------------------------------------------ the CLI


@pytest.mark.parametrize("text, value", [("False", False), ("false", False), ("0", False), ("no", False),
                                         ("True", True), ("true", True), ("1", True), (" yes ", True)])
def test_parse_bool(text, value):
    assert config.parse_bool(text) is value


def test_cli_parses_booleans_into_the_config(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_finetune(cfg, *, device, out):
        seen.update(cfg=cfg, out=out)
        return training.FinetuneResult(None, pd.DataFrame({"loss": [0.5]}), Path(out) if out else None, cfg, 0.0)

    monkeypatch.setattr(training, "finetune", fake_finetune)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = str(tmp_path / "run.pt")
    assert training.main(["--method", "fare", "--amp", "False", "--device", "cpu", "--out", out]) == 0
    assert seen["cfg"].amp is False and seen["cfg"].method == "fare" and seen["out"] == out
    assert json.loads(capsys.readouterr().out)["final_loss"] == 0.5
    training.main(["--amp", "true", "--device", "cpu", "--finetune_steps", "7"])
    assert seen["cfg"].amp is True and seen["cfg"].finetune_steps == 7
    with pytest.raises(SystemExit) as exit_info:
        training.main(["--amp", "maybe"])
    assert exit_info.value.code == 2
    assert "expected True or False, got 'maybe'" in capsys.readouterr().err


@pytest.mark.parametrize("variant", [dict(margin_kind="tam_sample", tam_threshold=0.0),
                                     dict(takd_target="adv"), dict(takd_target="feature")])
def test_tai_variants_train_and_differ_from_default_tai(variant, tmp_path):
    kw = dict(method="tai", margin_offset=0.02, **SMALL)
    default = training.finetune(FinetuneConfig.from_params(**kw), out=tmp_path / "a.pt", progress=False)
    other = training.finetune(FinetuneConfig.from_params(**kw, **variant), out=tmp_path / "b.pt", progress=False)
    assert other.history.loss.notna().all()
    assert not default.history.loss.equals(other.history.loss)


def test_adaptive_asam_remeasures_the_offset_on_the_student_and_resumes_with_it(tmp_path):
    kw = dict(SMALL, finetune_steps=4, checkpoint_every=2)
    cfg = FinetuneConfig.from_params(method="tai", margin_offset=0.5, offset_every=2, **kw)
    full = training.finetune(cfg, out=tmp_path / "full.pt", progress=False)
    offsets = full.history.margin_offset.tolist()
    assert offsets[:2] == [0.5, 0.5] and offsets[2] == offsets[3] != 0.5  # measured at step 2, kept until step 4
    training.finetune(cfg, out=tmp_path / "part.pt", stop_after=3, progress=False)
    resumed = training.finetune(cfg, out=tmp_path / "part.pt", progress=False)
    assert resumed.history.margin_offset.tolist() == offsets
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    once = training.finetune(cfg.replace(offset_every=0), out=tmp_path / "once.pt", progress=False)
    assert "margin_offset" not in once.history.columns


def test_default_iat_spreads_the_training_classes_and_keeps_their_order():
    """Issue 10: the default IAT lowers the MHE energy and raises the minimum distance of the fine-tuning task's
    class embeddings, with Spearman consistency >= 0.95 against the original ones."""
    from nbhelpers import analysis

    base, pre = models.create_model_and_transforms("mini")
    cfg = config.IATConfig()
    data = training.TrainData(FinetuneConfig(), preprocess=pre)
    tuned = text_tuning.tune_text(base, cfg, classnames=data.classnames, templates=data.templates,
                                  images=data.first_images(cfg.iat_images), progress=False)
    with torch.no_grad():
        orig = build_class_embeddings(base, data.classnames, data.templates)
        new = build_class_embeddings(tuned.model, data.classnames, data.templates)
    off = ~torch.eye(len(orig), dtype=torch.bool)
    assert losses.mhe_energy(new) < losses.mhe_energy(orig) - 0.005
    assert torch.cdist(new, new)[off].min() > torch.cdist(orig, orig)[off].min() + 0.01
    assert analysis.semantic_consistency_rho(orig, new) >= 0.95


def test_margin_offset_is_one_measurement_seeded_by_the_training_seed():
    """Issue 18: one offset measurement (the notebooks' and the student's) with one seed, train_seed: the evaluation
    seed changes nothing, the training seed does, and the notebook entry point is the head measurement."""
    base, pre = models.create_model_and_transforms("mini")
    cfg = FinetuneConfig.from_params(method="tai", train_eps=1.0, offset_eps=4.0)
    kw = dict(eps_large=4.0, n=48, steps=3)
    got = training.measure_margin_offset(base, cfg, preprocess=pre, **kw)
    assert got["offset_logits"] < 0 and got["offset_cosine"] == got["offset_logits"] / got["logit_scale"]
    assert training.measure_margin_offset(base, cfg.replace(seed=cfg.seed + 7), preprocess=pre, **kw) == got
    assert training.measure_margin_offset(base, cfg.replace(train_seed=cfg.train_seed + 1), preprocess=pre,
                                          **kw)["offset_logits"] != got["offset_logits"]
    data = training.TrainData(cfg, preprocess=pre)
    head = training.build_head(base, build_class_embeddings(base, data.classnames, data.templates))
    assert training.measure_head_offset(head, data, cfg, **kw) == got
    with pytest.raises(ValueError, match="train_seed"):
        training.measure_head_offset(head, data, cfg.replace(train_seed=cfg.train_seed + 1), **kw)
