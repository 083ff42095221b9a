"""The attack's fast path (pgd_attack / predict_logits fast=True) computes the same thing as the fp32 default path.

The fast path reorders float32 arithmetic (fused attention, patch embedding as a matmul, BatchNorm folded into
convolutions, channels-last), so logits agree to about 1e-6 relative, not bit for bit, and the sign of a few
near-zero gradient pixels can differ. Robust accuracy may therefore move only by samples that sit within rounding
distance of the decision boundary: we allow 2 of 256 (0.8 points), far below the sampling noise of a 256-sample
accuracy (binomial standard error about 2.7 points) and far below what a broken fast path would change.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers import world
from nbhelpers.attacks import frozen, pgd_attack
from nbhelpers.fastpath import fast_forward
from nbhelpers.metrics import accuracy, predict_logits

EPS = 4 / 255


@pytest.fixture(scope="module")
def objects_data():
    return world.generate_task("objects", 256, seed=0, split="test")


def _forward_and_input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)
    return logits.detach(), grad


def _assert_same_gradient(grad: torch.Tensor, ref: torch.Tensor) -> None:
    """Same input gradient up to rounding: relative L2 error < 1e-3 and (nearly) the same signs, which PGD uses."""
    assert float((grad - ref).norm() / ref.norm()) < 1e-3
    assert float((grad.sign() == ref.sign()).float().mean()) > 0.999


def _assert_restored(model: nn.Module, state: dict, flags: list[bool]) -> None:
    assert not [name for name, m in model.named_modules() if "forward" in m.__dict__], "instance forwards left"
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_fast_path_gives_the_fp32_robust_accuracy(objects_head, objects_data):
    x, y = objects_data
    clean = accuracy(predict_logits(objects_head, x, y), y)
    default = predict_logits(objects_head, x, y, eps=EPS, steps=10, seed=0)
    fast = predict_logits(objects_head, x, y, eps=EPS, steps=10, seed=0, fast=True)
    acc_default, acc_fast = accuracy(default, y), accuracy(fast, y)
    assert acc_default < clean - 0.2, (clean, acc_default)  # the attack works, so equality below means something
    assert abs(acc_fast - acc_default) <= 2 / 256, (acc_fast, acc_default)
    agree = ((default.argmax(1) == y) == (fast.argmax(1) == y)).float().mean().item()
    assert agree >= 1 - 2 / 256, agree


@pytest.mark.parametrize("amp", [False, True])
def test_fast_adversarial_images_stay_in_the_eps_ball_and_the_image_range(objects_head, objects_data, amp):
    x, y = (t[:32] for t in objects_data)
    adv = pgd_attack(objects_head, x, y, eps=EPS, steps=3, generator=torch.Generator().manual_seed(0), fast=True,
                     amp=amp)
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.is_contiguous()
    assert float((adv - x).abs().max()) <= EPS + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float((adv - x).abs().max()) > EPS / 2, "the attack must move the images"


def test_fast_forward_matches_the_mini_tower_and_restores_it(mini_model, objects_head, objects_data):
    x, y = (t[:64] for t in objects_data)
    state = {k: v.clone() for k, v in objects_head.state_dict().items()}
    flags = [p.requires_grad for p in objects_head.parameters()]
    with frozen(objects_head):
        ref_logits, ref_grad = _forward_and_input_grad(objects_head, x, y)
        with fast_forward(objects_head):
            assert any(type(m) is nn.BatchNorm2d and "forward" in m.__dict__ for m in objects_head.modules()), \
                "eval-mode BatchNorms of the frozen ModifiedResNet should be folded"
            logits, grad = _forward_and_input_grad(objects_head, x.contiguous(memory_format=torch.channels_last), y)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    _assert_same_gradient(grad, ref_grad)
    _assert_restored(objects_head, state, flags)


def test_fast_forward_matches_vit_b32_attention_and_patch_embedding():
    from nbhelpers.models import create_model_and_transforms
    from nbhelpers.zeroshot import ZeroShotClassifier

    torch.manual_seed(0)
    model, _ = create_model_and_transforms("paper", pretrained="none")
    head = ZeroShotClassifier(model, F.normalize(torch.randn(5, 512), dim=-1)).eval()
    x, y = torch.rand(2, 3, 224, 224), torch.tensor([0, 3])
    state = {k: v.clone() for k, v in head.state_dict().items()}
    flags = [p.requires_grad for p in head.parameters()]
    tokens = model.tokenize(["This is a photo of a cat", "This is a photo of a dog"])
    with frozen(head):
        ref_logits, ref_grad = _forward_and_input_grad(head, x, y)
        with torch.no_grad():
            ref_text = model.encode_text(tokens)
        with fast_forward(head):
            n_fused = sum("forward" in m.__dict__ for m in head.modules())
            logits, grad = _forward_and_input_grad(head, x, y)
            with torch.no_grad():
                text = model.encode_text(tokens)  # causal-mask attention of the text tower
    assert n_fused == 12 + 12 + 1, n_fused  # attention blocks of both towers and the patch embedding
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(text, ref_text, rtol=1e-4, atol=1e-5)
    _assert_same_gradient(grad, ref_grad)
    _assert_restored(head, state, flags)


def test_fast_forward_keeps_trainable_layers_exact_in_gradient():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 4, 2, stride=2))
    net.train()  # batch statistics: the BatchNorm must not be folded, and all weights need their gradients
    ref = copy.deepcopy(net)
    x = torch.rand(4, 3, 8, 8)
    ref(x).square().sum().backward()
    with fast_forward(net):
        assert "forward" not in net[1].__dict__
        net(x.contiguous(memory_format=torch.channels_last)).square().sum().backward()
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
