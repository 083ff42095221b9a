"""The GPU path is right before it is fast: bf16 autocast, torch.compile of the image tower and prefetching keep what
the attack and the training compute (issue 20, parts 3-4).

Noise bound for robust accuracy (ours): the two attacks run on the same images, so their per-image outcomes are
paired. With b images robust under fp32 only and c under bf16 only, equal strength means b ~ Binomial(b + c, 1/2)
(McNemar); we require |b - c| <= 3 sqrt(b + c), a z-statistic within 3 (two-sided level about 0.3%). A broken
attack (no gradient, wrong sign, underflow) moves far more than that: PGD-10 at 4/255 takes the mini CLIP from
93.8% clean to 25.8% robust on these 256 images (measured on CPU; bf16: 25.4%, b = 1, c = 0), and the test checks
first that the attack removes at least 30 points, so equality means something.

The CPU tests run everywhere (CPU autocast supports bf16, so the bf16 path runs here too); the tests marked
``gpu`` repeat the checks on CUDA and are skipped where it is absent (tests/conftest.py).
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from nbhelpers import attacks, config, fastpath, training, world
from nbhelpers.attacks import pgd_attack
from nbhelpers.config import ConfigError, FinetuneConfig
from nbhelpers.metrics import accuracy, predict_logits
from nbhelpers.models import create_model_and_transforms
from nbhelpers.zeroshot import build_class_embeddings, build_head

EPS = 4 / 255
Z = 3.0  # the paired bound's z (see the module docstring)
SMALL = dict(finetune_steps=2, train_batch_size=16, warmup_steps=1, checkpoint_every=1)


@pytest.fixture(scope="module")
def objects_data():
    return world.generate_task("objects", 256, seed=0, split="test")


def _paired_counts(correct_a: torch.Tensor, correct_b: torch.Tensor) -> tuple[int, int]:
    """(images correct under a only, under b only) of two boolean vectors (N,) on the same images."""
    return int((correct_a & ~correct_b).sum()), int((~correct_a & correct_b).sum())


def _assert_same_strength(ref_logits: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
    b, c = _paired_counts(ref_logits.argmax(1) == y, logits.argmax(1) == y)
    assert abs(b - c) <= Z * math.sqrt(b + c), (f"robust under the reference only: {b}, under the other only: {c}; "
                                                f"|b - c| must be <= {Z} sqrt(b + c)")


def _check_bf16_pgd(head: nn.Module, x: torch.Tensor, y: torch.Tensor, *, device: torch.device) -> None:
    clean = accuracy(predict_logits(head, x, y, device=device), y)
    fp32 = predict_logits(head, x, y, eps=EPS, steps=10, seed=0, fast=True, device=device)
    bf16 = predict_logits(head, x, y, eps=EPS, steps=10, seed=0, fast=True, amp=True, device=device)
    assert bf16.dtype == torch.float32
    assert accuracy(fp32, y) < clean - 0.3, (clean, accuracy(fp32, y))  # the attack works at all
    _assert_same_strength(fp32, bf16, y)


def test_bf16_pgd_keeps_the_attacks_strength(objects_head, objects_data):
    _check_bf16_pgd(objects_head, *objects_data, device=torch.device("cpu"))


def test_counter_start_keeps_the_attacks_strength(objects_head, objects_data):
    """The counter-based random start (paper's default) draws other starts than the legacy one: not the same bits,
    the same strength (the paired bound)."""
    x, y = objects_data
    legacy = predict_logits(objects_head, x, y, eps=EPS, steps=10, seed=0, fast=True)
    counter = predict_logits(objects_head, x, y, eps=EPS, steps=10, seed=0, fast=True, start="counter")
    assert not torch.equal(legacy, counter)
    _assert_same_strength(legacy, counter, y)


def test_the_paired_bound_catches_a_weaker_attack(objects_head, objects_data):
    """The bound is not vacuous: PGD-1 at eps 1/255 (a much weaker attack) fails it against PGD-10 at 4/255."""
    x, y = objects_data
    strong = predict_logits(objects_head, x, y, eps=EPS, steps=10, seed=0, fast=True)
    weak = predict_logits(objects_head, x, y, eps=1 / 255, steps=1, seed=0, fast=True)
    with pytest.raises(AssertionError, match="sqrt"):
        _assert_same_strength(strong, weak, y)


def test_bf16_outputs_run_the_tower_in_bf16_and_hand_on_fp32(mini_model):
    """amp in training: matmuls inside the tower in bf16, its output (and so every loss after it) in fp32."""
    tower = mini_model.clip.visual
    inner = next(m for m in tower.modules() if isinstance(m, nn.Conv2d))  # the stem
    seen: list[torch.dtype] = []
    handle = inner.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x = torch.rand(2, 3, mini_model.image_size, mini_model.image_size)
    try:
        with fastpath.bf16_outputs(tower):
            out = mini_model.encode_image(x)
        plain = mini_model.encode_image(x)
    finally:
        handle.remove()
    assert seen == [torch.bfloat16, torch.float32]
    assert out.dtype == torch.float32 and "forward" not in tower.__dict__
    assert float((out - plain).abs().max()) < 0.05  # bf16 rounding of unit-norm embeddings, not another function


def test_amp_reaches_the_training_attack_and_the_objective_stays_fp32(monkeypatch):
    """The training attack gets cfg.amp; under amp the objective sees fp32 tower outputs and returns an fp32 loss
    close to the fp32 one on the same batch and start."""
    cfg = FinetuneConfig.from_params(method="tai", **SMALL)
    base, _ = create_model_and_transforms("mini")
    data = training.TrainData(cfg)
    emb = training.class_embeddings_for(cfg, base, data.classnames, data.templates, device="cpu")
    x, y = data.batch(0, cfg.train_batch_size)
    noise = 2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 1
    seen_amp: list[bool] = []
    real_attack = attacks.pgd_attack  # TAI's training attack (its record's TrainingAttack) calls it
    monkeypatch.setattr(attacks, "pgd_attack", lambda *a, **k: (seen_amp.append(k["amp"]), real_attack(*a, **k))[1])
    losses = {}
    for amp in (False, True):
        run = cfg.replace(amp=amp)
        student = copy.deepcopy(base)
        for name, p in student.named_parameters():
            p.requires_grad_(name.startswith("clip.visual."))
        opt = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=run.finetune_lr)
        teacher = build_head(base, emb)
        engine = training.make_engine(run, student, emb, opt, teacher=teacher, scale=base.logit_scale())
        losses[amp] = training.train_step(engine, 0, x, y, noise)
    assert seen_amp == [False, True]
    assert losses[True].dtype == torch.float32
    l_amp, l_fp32 = float(losses[True].detach()), float(losses[False].detach())
    assert abs(l_amp - l_fp32) < 0.05 * abs(l_fp32), (l_amp, l_fp32)


def _tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()


def test_compiled_tower_gives_the_eager_attack():
    """torch.compile (inductor) of a tiny convolutional classifier: same PGD images and logits as eager, to float
    rounding, and nothing left behind (kept tiny: compiling on CPU builds C++ kernels, several seconds)."""
    ok, why = fastpath.compile_available("cpu")
    if not ok:
        pytest.skip(f"torch.compile's inductor backend cannot build kernels here: {why}")
    net = _tiny_classifier()
    x, y = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(1)), torch.randint(10, (64,))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    ref = pgd_attack(net, x, y, eps=8 / 255, steps=5, generator=torch.Generator().manual_seed(0))
    with fastpath.compiled(net):
        assert "forward" in net.__dict__
        adv = pgd_attack(net, x, y, eps=8 / 255, steps=5, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            logits = net(adv)
    assert "forward" not in net.__dict__ and list(net.state_dict()) == list(state)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert float((adv - ref).abs().max()) <= EPS / 2 + 1e-6  # a rounding flip of a gradient sign moves a pixel 1 step
    assert float((adv != ref).float().mean()) < 0.01
    with torch.no_grad():
        assert torch.allclose(logits, net(adv), rtol=1e-4, atol=1e-5)
    assert float((adv - x).abs().max()) > EPS  # it attacked


def test_compiled_and_bf16_wrappers_stack_and_unwind():
    net = _tiny_classifier()
    with fastpath.compiled(net, backend="eager"), fastpath.bf16_outputs(net):
        out = net(torch.rand(2, 3, 16, 16))
        inner = net.__dict__["forward"]
    assert out.dtype == torch.float32 and inner is not None
    assert "forward" not in net.__dict__
    with fastpath.compiled(net, enabled=False), fastpath.bf16_outputs(net, enabled=False):
        assert "forward" not in net.__dict__


def _batches(cfg: FinetuneConfig, *, start: int, stop: int, prefetch: bool, device: torch.device) -> list[tuple]:
    data = training.TrainData(cfg)
    return list(training.iter_train_batches(data, cfg, start=start, stop=stop, device=device, prefetch=prefetch))


def _assert_same_batches(a: list[tuple], b: list[tuple]) -> None:
    assert [s for s, *_ in a] == [s for s, *_ in b]
    for (_, *ta), (_, *tb) in zip(a, b):
        assert all(torch.equal(u.cpu(), v.cpu()) for u, v in zip(ta, tb))


def test_prefetch_yields_the_same_batches_in_the_same_order():
    cfg = FinetuneConfig.from_params(**SMALL)
    cpu = torch.device("cpu")
    plain = _batches(cfg, start=3, stop=7, prefetch=False, device=cpu)
    ahead = _batches(cfg, start=3, stop=7, prefetch=True, device=cpu)
    assert len(plain) == 4 and not torch.equal(plain[0][1], plain[1][1])  # distinct batches, so equality means something
    _assert_same_batches(plain, ahead)
    assert _batches(cfg, start=2, stop=2, prefetch=True, device=cpu) == []


def test_device_knobs_are_checked_and_resolve_per_device():
    assert FinetuneConfig().prefetch_on("cuda") and not FinetuneConfig().prefetch_on("cpu")
    assert FinetuneConfig(prefetch="on").prefetch_on("cpu") and not FinetuneConfig(prefetch="off").prefetch_on("cuda")
    with pytest.raises(ConfigError, match="prefetch"):
        FinetuneConfig(prefetch="yes")
    with pytest.raises(ConfigError, match="compile_tower"):
        FinetuneConfig(compile_tower="True")


def test_device_knobs_are_outside_every_key(monkeypatch):
    """Neither the training cache key nor 06's study recipe sees the device knobs: no committed key moves."""
    cfg = FinetuneConfig.from_params(method="tai")
    key = training.cache_key(cfg)
    assert training.cache_key(cfg.replace(compile_tower=True, prefetch="off")) == key
    payloads: list[dict] = []
    monkeypatch.setattr(training, "content_key", lambda d: payloads.append(d) or "k")
    training.cache_key(cfg)
    assert not set(config.DeviceKnobs.field_names()) & set(payloads[0])
    recipe = {*config.FinetuneKnobs.field_names(), *config.TAIKnobs.field_names(), *config.IATKnobs.field_names()}
    assert not set(config.DeviceKnobs.field_names()) & recipe
    assert not any(issubclass(c, config.DeviceKnobs) for c in config.NOTEBOOK_CONFIGS.values())  # no notebook moved
    # amp runs are keyed with the amp path's own version; default runs are not
    assert "training_amp" not in payloads[0]["numerics"]
    monkeypatch.undo()
    assert training.cache_key(cfg.replace(amp=True)) != key


def test_prefetch_and_device_knobs_train_the_same_weights_and_resume_across_them(tmp_path):
    """Two steps with prefetch on (interrupted after one, resumed with prefetch off) give the weights and losses of
    an uninterrupted run without prefetch, bit for bit."""
    cfg = FinetuneConfig.from_params(method="tecoa", prefetch="off", **SMALL)
    plain = training.finetune(cfg, out=tmp_path / "plain.pt", progress=False)
    ahead = cfg.replace(prefetch="on")
    training.finetune(ahead, out=tmp_path / "ahead.pt", stop_after=1, progress=False)
    resumed = training.finetune(cfg, out=tmp_path / "ahead.pt", progress=False)
    assert resumed.resumed_from == 1
    assert list(resumed.history.loss) == list(plain.history.loss)
    a, b = plain.model.visual.state_dict(), resumed.model.visual.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------- on CUDA


@pytest.fixture(scope="module")
def cuda_head():
    device = torch.device("cuda")
    model, _ = create_model_and_transforms("mini", device=device)
    names = world.TASKS["objects"].classnames()
    return build_head(model, build_class_embeddings(model, names, [world.PROMPT_TEMPLATE], device=device),
                      device=device)


@pytest.mark.gpu
def test_bf16_pgd_keeps_the_attacks_strength_on_cuda(cuda_head, objects_data):
    _check_bf16_pgd(cuda_head, *objects_data, device=torch.device("cuda"))  # predict_logits moves each batch


@pytest.mark.gpu
def test_bf16_autoattack_keeps_its_strength_on_cuda(cuda_head, objects_data):
    """AutoAttack (APGD-CE + APGD-T) with amp: the same strength as fp32 by the paired bound, and it works at all."""
    from nbhelpers.attacks import autoattack

    x, y = (t[:128].cuda() for t in objects_data)
    n = cuda_head.num_classes
    runs = {amp: autoattack(cuda_head, x, y, eps=EPS, n_classes=n, seed=0, fast=True, amp=amp) for amp in (False, True)}
    with torch.no_grad():
        clean, fp32, bf16 = (cuda_head(t).float() for t in (x, runs[False], runs[True]))
    assert ((runs[True] - x).abs().amax() <= EPS + 1e-6) and accuracy(fp32, y) < accuracy(clean, y) - 0.3
    _assert_same_strength(fp32, bf16, y)


@pytest.mark.gpu
def test_compiled_tower_gives_the_eager_attack_on_cuda(cuda_head, objects_data):
    ok, why = fastpath.compile_available("cuda")
    if not ok:
        pytest.skip(why)
    x, y = objects_data  # on the CPU: predict_logits moves each batch and returns CPU logits
    device = torch.device("cuda")
    eager = predict_logits(cuda_head, x, y, eps=EPS, steps=10, seed=0, fast=True, amp=True, device=device)
    with fastpath.compiled(cuda_head.model.clip.visual):  # bf16, as the GPU runs it (one compilation: a minute)
        comp = predict_logits(cuda_head, x, y, eps=EPS, steps=10, seed=0, fast=True, amp=True, device=device)
    _assert_same_strength(eager, comp, y)
    assert "forward" not in cuda_head.model.clip.visual.__dict__


@pytest.mark.gpu
def test_prefetch_yields_the_same_batches_on_cuda():
    cfg = FinetuneConfig.from_params(**SMALL)
    device = torch.device("cuda")
    plain = _batches(cfg, start=0, stop=4, prefetch=False, device=device)
    ahead = _batches(cfg, start=0, stop=4, prefetch=True, device=device)
    assert all(t.device.type == "cuda" for _, *ts in ahead for t in ts)
    _assert_same_batches(plain, ahead)


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["tai"])  # TAI: the student's and the teacher's towers; TeCoA: scripts/gpu_check.sh
def test_amp_compile_and_prefetch_train_like_fp32_on_cuda(method, tmp_path):
    """Two steps on CUDA with every device option on: the first step's loss (same batch, same start; only float
    precision differs) within 5% of the fp32 run's, every weight finite."""
    base = FinetuneConfig.from_params(method=method, device="cuda", prefetch="off", **SMALL)
    fast = base.replace(amp=True, compile_tower=fastpath.compile_available("cuda")[0], prefetch="on")
    ref = training.finetune(base, device="cuda", out=tmp_path / "ref.pt", progress=False)
    run = training.finetune(fast, device="cuda", out=tmp_path / "fast.pt", progress=False)
    l_ref, l_run = float(ref.history.loss.iloc[0]), float(run.history.loss.iloc[0])
    assert abs(l_run - l_ref) < 0.05 * abs(l_ref), (l_ref, l_run)
    assert all(torch.isfinite(p).all() for p in run.model.visual.parameters())
    assert "forward" not in run.model.visual.__dict__  # the compiled forward is gone after the run
