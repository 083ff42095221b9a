"""The counter-based random start of PGD (attacks.counter_uniform): fixed bits in integer ops, independent of the
batch size and of how images are split over ranks, declared as a config knob that enters a key only where it is
not "legacy" (so the mini profile's committed stores keep their keys)."""
from __future__ import annotations

import random

import pytest
import torch

from nbhelpers import attacks, config, evaluation, grid, metrics, study_runs, training

# bits of counter_uniform(0, [0, 1, 2**40], 4) * 2**24 and of (seed 1, stream 5, image 0): integer math, so every
# CPU (ATEN_CPU_CAPABILITY, threads) and GPU must give exactly these
GOLDEN = [[13123172, 16036231, 2677088, 6006216], [14544667, 7359969, 8564911, 1652996],
          [1752667, 6671268, 8070944, 4614370]]
GOLDEN_STREAM = [[11051308, 7764180, 3145668, 15155699]]


def test_counter_uniform_gives_its_fixed_bits():
    u = attacks.counter_uniform(0, torch.tensor([0, 1, 2**40]), 4)
    assert u.dtype == torch.float32
    assert (u * 2**24).long().tolist() == GOLDEN
    assert (attacks.counter_uniform(1, torch.tensor([0]), 4, stream=5) * 2**24).long().tolist() == GOLDEN_STREAM


def test_mul32_is_exact_multiplication_mod_2_32():
    rng = random.Random(0)
    xs = [0, 1, 2**32 - 1, *(rng.randrange(2**32) for _ in range(200))]
    for c in (0x7FEB352D, 0x846CA68B, 2**32 - 1):
        got = attacks._mul32(torch.tensor(xs, dtype=torch.int64), c).tolist()
        assert got == [(x * c) % 2**32 for x in xs]


def test_counter_noise_is_uniform_and_keyed_by_seed_stream_and_image():
    u = attacks.counter_uniform(3, torch.arange(64), 3 * 16 * 16)
    assert 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    assert len(torch.unique(u[:, :8], dim=0)) == 64  # every image its own numbers
    for other in (attacks.counter_uniform(4, torch.arange(64), 768),
                  attacks.counter_uniform(3, torch.arange(64), 768, stream=1),
                  attacks.counter_uniform(3, torch.arange(1, 65), 768)):
        assert (other != u).float().mean() > 0.99
    noise = attacks.counter_start_noise(3, torch.arange(64), (3, 16, 16))
    assert noise.shape == (64, 3, 16, 16) and torch.equal(noise.flatten(1), 2 * u - 1)


def test_counter_noise_does_not_depend_on_the_batching():
    whole = attacks.counter_start_noise(7, torch.arange(10), (3, 8, 8))
    parts = torch.cat([attacks.counter_start_noise(7, torch.arange(a, b), (3, 8, 8)) for a, b in ((0, 3), (3, 10))])
    ranks = [attacks.counter_start_noise(7, torch.arange(r, 10, 2), (3, 8, 8)) for r in range(2)]
    assert torch.equal(whole, parts)
    assert torch.equal(whole[0::2], ranks[0]) and torch.equal(whole[1::2], ranks[1])


def test_bad_counter_inputs_fail_before_any_work():
    with pytest.raises(ValueError, match="positions >= 0"):
        attacks.counter_uniform(0, torch.tensor([-1]), 4)
    with pytest.raises(ValueError, match="seed and stream"):
        attacks.counter_uniform(-1, torch.tensor([0]), 4)
    with pytest.raises(ValueError, match="start scheme"):
        metrics.predict_logits(torch.nn.Identity(), torch.zeros(1, 3, 2, 2), torch.zeros(1, dtype=torch.long),
                               start="philox")
    with pytest.raises(config.ConfigError, match="attack_start"):
        config.EvaluationConfig(attack_start="philox")


class _Linear(torch.nn.Module):
    """A tiny classifier of (N, 3, 4, 4) images into 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(48, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_predict_logits_counter_starts_follow_the_image_not_the_batch(monkeypatch):
    torch.manual_seed(0)
    clf, x, y = _Linear(), torch.rand(7, 3, 4, 4), torch.randint(0, 3, (7,))
    seen: list[torch.Tensor] = []
    real = metrics.pgd_attack

    def spy(*args, start_noise=None, **kw):
        seen.append(start_noise.clone())
        return real(*args, start_noise=start_noise, **kw)

    monkeypatch.setattr(metrics, "pgd_attack", spy)
    starts = {}
    for bs in (2, 7):
        seen.clear()
        metrics.predict_logits(clf, x, y, eps=4 / 255, steps=1, batch_size=bs, seed=5, start="counter")
        starts[bs] = torch.cat(seen)
    assert torch.equal(starts[2], starts[7])
    assert torch.equal(starts[7], attacks.counter_start_noise(5, torch.arange(7), (3, 4, 4)))
    seen.clear()  # the legacy default passes no start noise: its generator draws as before
    monkeypatch.setattr(metrics, "pgd_attack", lambda *a, start_noise=None, **kw: seen.append(start_noise) or a[1])
    metrics.predict_logits(clf, x, y, eps=4 / 255, steps=1, batch_size=7, seed=5)
    assert seen == [None]


def test_auto_scheme_is_legacy_on_mini_and_counter_on_paper():
    assert config.EvaluationConfig().start_scheme() == "legacy"
    assert config.StudyConfig(profile="paper").start_scheme() == "counter"
    assert config.FinetuneConfig(attack_start="counter").start_scheme() == "counter"
    assert "attack_start" not in repr(config.EvaluationConfig())  # the notebooks print their config: no output moves


def test_the_scheme_enters_keys_only_where_it_is_not_legacy():
    mini = config.FinetuneConfig()
    assert training.cache_key(mini) == training.cache_key(mini.replace(attack_start="legacy"))
    assert training.cache_key(mini) != training.cache_key(mini.replace(attack_start="counter"))
    study_cfg = config.StudyConfig()
    assert "attack_start" not in study_runs.stage_evaluation(study_cfg, "test")
    assert study_runs.stage_evaluation(study_cfg.replace(attack_start="counter"), "test")["attack_start"] == "counter"
    assert evaluation.start_identity("legacy") == {}
    row = {"image_id": "a", "text_id": "b"}
    assert grid.reuse(row, dict(row)) == "reuse"
    assert grid.reuse(row, {**row, "attack_start": "counter"}) is None
    assert grid.reuse({**row, "attack_start": "counter"}, {**row, "attack_start": "counter"}) == "reuse"


class _Data:
    """A stand-in for TrainData: batch(step, size) -> (images, labels), a pure function of step."""

    def batch(self, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(step)
        return torch.rand(size, 3, 4, 4, generator=g), torch.randint(0, 3, (size,), generator=g)


def test_counter_training_noise_is_the_global_batchs_sliced_per_rank():
    cfg = config.FinetuneConfig(attack_start="counter", train_batch_size=6)
    cpu = torch.device("cpu")
    whole = list(training.iter_train_batches(_Data(), cfg, start=2, stop=4, device=cpu))
    ranks = [list(training.iter_train_batches(_Data(), cfg, start=2, stop=4, device=cpu, rank=r, world_size=2,
                                              prefetch=True)) for r in range(2)]
    for k, (step, x, y, noise) in enumerate(whole):
        assert noise.shape == x.shape and float(noise.abs().max()) <= 1
        assert torch.equal(noise, training.train_start_noise(cfg.train_seed, step, torch.arange(6), (3, 4, 4),
                                                             device=cpu))
        for r in range(2):
            assert torch.equal(ranks[r][k][3], noise[r::2]) and torch.equal(ranks[r][k][2], y[r::2])
    legacy = list(training.iter_train_batches(_Data(), cfg.replace(attack_start="legacy"), start=2, stop=4,
                                              device=cpu))
    assert not torch.equal(legacy[0][3], whole[0][3]) and torch.equal(legacy[0][2], whole[0][2])


@pytest.mark.gpu
def test_counter_noise_has_the_same_bits_on_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    index = torch.tensor([0, 1, 2**40, 12345])
    cpu = attacks.counter_start_noise(9, index, (3, 32, 32), stream=3)
    gpu = attacks.counter_start_noise(9, index.cuda(), (3, 32, 32), stream=3)
    assert gpu.is_cuda and torch.equal(cpu, gpu.cpu())


# ---------------------------------------------------------------------------------------------- speed-only paths
def _reference_update(x, grad, x0, eps, alpha):
    """PGD's update as it was (8 kernels)."""
    x = x + alpha * grad.sign()
    return torch.min(torch.max(x, x0 - eps), x0 + eps).clamp(0, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [1 / 255, 4 / 255, 0.5])
def test_pgd_update_is_bit_equal_to_the_eight_kernel_form(dtype, eps):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(16, 3, 8, 8, generator=g, dtype=dtype)
    x0[:4] = x0[:4].round()  # pixels at 0 and 1: the box edges
    x = (x0 + (2 * torch.rand(x0.shape, generator=g, dtype=dtype) - 1) * eps).clamp(0, 1)
    lo, hi = attacks.projection_bounds(x0, eps)
    for alpha in (1 / 255, 2.5 * eps / 10, 0.3):
        grad = torch.randn(x0.shape, generator=g, dtype=dtype)
        grad[::3] = 0  # sign 0: no move
        want = _reference_update(x, grad, x0, eps, alpha)
        got = attacks.pgd_update(x, grad, lo, hi, alpha=alpha)
        assert torch.equal(got, want) and got.dtype == dtype
        x = want
    cl = x0.contiguous(memory_format=torch.channels_last)
    lo, hi = attacks.projection_bounds(cl, eps)
    assert torch.equal(attacks.pgd_update(x.contiguous(memory_format=torch.channels_last), grad, lo, hi, alpha=0.1),
                       _reference_update(x, grad, x0, eps, 0.1))


def test_prefetched_batches_and_device_logits_change_no_number():
    torch.manual_seed(1)
    clf, x, y = _Linear(), torch.rand(11, 3, 4, 4), torch.randint(0, 3, (11,))
    batches = list(metrics.device_batches(x, y, batch_size=4, device="cpu", prefetch=True))
    assert [b[0] for b in batches] == [0, 4, 8]
    assert torch.equal(torch.cat([b[1] for b in batches]), x) and torch.equal(torch.cat([b[2] for b in batches]), y)
    for start in attacks.START_SCHEMES:
        kw = dict(eps=4 / 255, steps=2, batch_size=4, seed=3, start=start)
        off = metrics.predict_logits(clf, x, y, prefetch=False, **kw)
        on = metrics.predict_logits(clf, x, y, prefetch=True, **kw)
        assert off.device.type == "cpu" and off.shape == (11, 3) and torch.equal(on, off)
    with pytest.raises(ValueError, match="batch_size"):
        list(metrics.device_batches(x, y, batch_size=0, device="cpu"))


def test_autoattack_amp_hands_on_fp32_logits_computed_under_bf16():
    seen: list[torch.dtype] = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.nn.functional.linear(x.flatten(1), torch.ones(3, x[0].numel()))
            seen.append(out.dtype)
            return out

    out = attacks._Bf16Logits(Probe())(torch.rand(2, 3, 4, 4))
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
