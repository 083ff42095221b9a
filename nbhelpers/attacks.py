"""L-inf PGD in pixel space with input-only gradients, and the torchattacks reference.

All images are float tensors in [0, 1] of shape (N, 3, S, S); eps and step sizes are in the same pixel units
(so 4/255 is ``4 / 255``). The classifier maps images to logits (N, C) and is typically a
:class:`~nbhelpers.zeroshot.ZeroShotClassifier`, whose class text embeddings are computed once, outside the
loop. During the attack the classifier's parameters are frozen (``requires_grad=False``) and gradients are
taken with ``torch.autograd.grad`` w.r.t. the input only, so nothing leaks into ``.grad`` of the weights and
no weight-gradient work is done.

The attack objective is summed over the batch (not averaged): the sign step is unchanged, but per-sample
gradients do not shrink with batch size, so low precision cannot underflow them (PMG-AFT issue #1).

Two objectives share one PGD loop: :func:`pgd_attack` maximises a classifier's cross-entropy or CW margin
against labels; :func:`embedding_pgd_attack` maximises the squared L2 distance of an encoder's embeddings from
fixed targets, without labels (FARE's training attack).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers import losses
from nbhelpers.fastpath import fast_forward, wants_channels_last
from nbhelpers.utils import fp32_at_least

# bump with any change to the numbers this module computes (see utils.numerics_versions)
NUMERICS_VERSION = 1

LossName = Literal["ce", "cw"]
ATTACK_LOSSES: tuple[str, ...] = ("ce", "cw")


@dataclass(frozen=True)
class AttackSpec:
    """How an attack is run: 'pgd' (our PGD with steps and loss) or 'autoattack' (torchattacks, a version)."""

    kind: str
    label: str
    steps: int = 0
    loss: str = "ce"
    version: str = ""


ATTACKS: dict[str, AttackSpec] = {
    "pgd10": AttackSpec("pgd", "PGD-10", steps=10, loss="ce"),
    "pgd100": AttackSpec("pgd", "PGD-100", steps=100, loss="ce"),
    "cw10": AttackSpec("pgd", "CW-PGD-10", steps=10, loss="cw"),
    "aa": AttackSpec("autoattack", "AutoAttack (APGD-CE + APGD-T)", version="apgd"),
    "aa_full": AttackSpec("autoattack", "AutoAttack (standard, + FAB-T + Square)", version="standard"),
}


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Temporarily set requires_grad=False on every parameter (restoring each flag afterwards)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CW margin per sample (N,): best other logit minus the true logit (positive = misclassified)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


def attack_objective(logits: torch.Tensor, labels: torch.Tensor, loss: LossName) -> torch.Tensor:
    """Scalar the attacker maximises: summed cross-entropy ('ce') or summed CW margin ('cw')."""
    if loss == "ce":
        return F.cross_entropy(fp32_at_least(logits), labels, reduction="sum")
    if loss == "cw":
        return margin_loss(fp32_at_least(logits), labels).sum()
    raise ValueError(f"unknown attack loss {loss!r}; choose one of {ATTACK_LOSSES}")


def _start_point(x0: torch.Tensor, *, eps: float, random_start: bool, generator: torch.Generator | None,
                 start_noise: torch.Tensor | None) -> torch.Tensor:
    """PGD's first iterate (N, 3, S, S) in [0, 1]: x0 + eps * start_noise, x0 + U[-eps, eps] (random_start), or x0."""
    if start_noise is not None:
        if start_noise.shape != x0.shape:
            raise ValueError(f"start_noise must have the images' shape {tuple(x0.shape)}, "
                             f"got {tuple(start_noise.shape)}")
        return (x0 + start_noise.to(x0.device, x0.dtype) * eps).clamp(0, 1)
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, dtype=x0.dtype, device="cpu").to(x0.device)
        return (x0 + (2 * noise - 1) * eps).clamp(0, 1)
    return x0.clone()


def _check_budget(eps: float, steps: int) -> None:
    """Refuse a negative radius or step count before any work."""
    if eps < 0:
        raise ValueError(f"eps must be >= 0 (pixel units, e.g. 4/255), got {eps}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")


def _pgd(module: nn.Module, images: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor], *, eps: float,
         alpha: float | None, steps: int, random_start: bool, generator: torch.Generator | None,
         start_noise: torch.Tensor | None, fast: bool, amp: bool) -> torch.Tensor:
    """The one L-inf PGD loop: signed-gradient ascent of objective(module(x)) (an fp32 scalar summed over the batch)
    w.r.t. the images (N, 3, S, S) in [0, 1], projected onto the eps ball and the unit box after every step."""
    alpha = 1 / 255 if alpha is None else alpha
    x0 = images.detach()
    if eps == 0 or steps == 0:
        return x0.clone()
    x = _start_point(x0, eps=eps, random_start=random_start, generator=generator, start_noise=start_noise)
    layers = contextlib.nullcontext()
    if fast:
        layers = fast_forward(module)
        if wants_channels_last(module):
            x0, x = (t.contiguous(memory_format=torch.channels_last) for t in (x0, x))
    was_training = module.training
    module.eval()
    with frozen(module), torch.enable_grad(), layers:
        for _ in range(steps):
            x.requires_grad_(True)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
                out = module(x)
            (grad,) = torch.autograd.grad(objective(out), x)
            x = x.detach() + alpha * grad.sign()
            x = torch.min(torch.max(x, x0 - eps), x0 + eps).clamp(0, 1)
    module.train(was_training)
    return x.detach().contiguous()


def pgd_attack(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float,
               alpha: float | None = None, steps: int = 10, loss: LossName = "ce", random_start: bool = True,
               generator: torch.Generator | None = None, start_noise: torch.Tensor | None = None,
               fast: bool = False, amp: bool = False) -> torch.Tensor:
    """L-inf PGD: adversarial images (N, 3, S, S) in [0, 1] with |x_adv - x|_inf <= eps (pixel units).

    alpha defaults to 1/255 (the peers' step). eps == 0 or steps == 0 returns the clean images. The random
    start is uniform in [-eps, eps]; pass a seeded CPU generator for reproducible starts, or start_noise
    (same shape as images, values in [-1, 1], scaled by eps) to fix it from outside (e.g. per global batch in DDP).
    fast: run the classifier's layers through :func:`nbhelpers.fastpath.fast_forward` (same math, float32
    rounding differs; channels-last images for convolutional towers). amp: forward passes under bf16 autocast on
    the images' device (for GPUs; the objective is still summed in fp32, so it cannot underflow).
    """
    _check_budget(eps, steps)
    if loss not in ATTACK_LOSSES:
        raise ValueError(f"unknown attack loss {loss!r}; choose one of {ATTACK_LOSSES}")
    return _pgd(classifier, images, lambda logits: attack_objective(logits, labels, loss), eps=eps, alpha=alpha,
                steps=steps, random_start=random_start, generator=generator, start_noise=start_noise, fast=fast,
                amp=amp)


def embedding_distance(features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Scalar the label-free attack maximises: sum over samples of ||features - targets||_2^2, in fp32 ((N, D) each)."""
    return (fp32_at_least(features) - fp32_at_least(targets.detach())).pow(2).sum()


def embedding_pgd_attack(encoder: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, eps: float,
                         alpha: float | None = None, steps: int = 10, random_start: bool = True,
                         generator: torch.Generator | None = None, start_noise: torch.Tensor | None = None,
                         fast: bool = False, amp: bool = False) -> torch.Tensor:
    """Label-free L-inf PGD: adversarial images (N, 3, S, S) in [0, 1] that push encoder(x_adv) (N, D) away from
    targets (N, D), maximising sum_i ||encoder(x_adv_i) - targets_i||_2^2 within |x_adv - x|_inf <= eps.

    FARE's inner maximisation (Schlarmann et al. 2024): encoder is the model being tuned, targets the frozen
    pre-trained model's unnormalised embeddings of the clean images. No labels, no class text. eps, alpha, steps,
    the start (random_start, generator, start_noise), fast and amp mean what they mean in :func:`pgd_attack`.
    """
    _check_budget(eps, steps)
    if targets.dim() != 2 or targets.shape[0] != images.shape[0]:
        raise ValueError(f"targets must be (N, D) with N = {images.shape[0]} images, got {tuple(targets.shape)}")
    return _pgd(encoder, images, lambda features: embedding_distance(features, targets), eps=eps, alpha=alpha,
                steps=steps, random_start=random_start, generator=generator, start_noise=start_noise, fast=fast,
                amp=amp)


def contrastive_pgd_attack(encoder: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, temperature: float,
                           eps: float, alpha: float | None = None, steps: int = 10, random_start: bool = True,
                           generator: torch.Generator | None = None, start_noise: torch.Tensor | None = None,
                           fast: bool = False, amp: bool = False) -> torch.Tensor:
    """Label-free L-inf PGD maximising CoAdv's image-image InfoNCE (losses.coadv_loss, summed over the batch) of
    encoder(x_adv) (N, D) against targets (N, D), the clean images' embeddings (fixed): adversarial images
    (N, 3, S, S) in [0, 1]. The other arguments mean what they mean in :func:`pgd_attack`."""
    _check_budget(eps, steps)
    if targets.dim() != 2 or targets.shape[0] != images.shape[0]:
        raise ValueError(f"targets must be (N, D) with N = {images.shape[0]} images, got {tuple(targets.shape)}")
    fixed = targets.detach()
    return _pgd(encoder, images, lambda f: losses.coadv_loss(f, fixed, temperature=temperature, reduction="sum"),
                eps=eps, alpha=alpha, steps=steps, random_start=random_start, generator=generator,
                start_noise=start_noise, fast=fast, amp=amp)


def torchattacks_pgd(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float,
                     alpha: float | None = None, steps: int = 10, random_start: bool = True,
                     seed: int = 0) -> torch.Tensor:
    """Reference PGD from torchattacks (cross-entropy, L-inf, pixel units) around the same classifier."""
    import torchattacks

    atk = torchattacks.PGD(classifier, eps=eps, alpha=1 / 255 if alpha is None else alpha, steps=steps,
                           random_start=random_start)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with frozen(classifier):
            return atk(images, labels).detach()


AUTOATTACK_TARGETS = 9  # APGD-T target classes in the standard AutoAttack (Croce & Hein 2020)


def _is_float64(module: nn.Module) -> bool:
    """Whether a module computes in float64 (its first floating parameter is float64)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None) == torch.float64


class _Float32Logits(nn.Module):
    """A float64 classifier as torchattacks needs it: its logits (N, C) handed over in float32 (FAB casts the
    images to float32 and mixes them with the logits; tests/test_numerics.py evaluates float64 models)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """float32 logits (N, C) of images (N, 3, S, S)."""
        return self.classifier(images).float()


def autoattack(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float,
               n_classes: int, seed: int = 0, version: str = "apgd", fast: bool = False,
               steps: int = 100) -> torch.Tensor:
    """AutoAttack (torchattacks, L-inf) adversarial images (N, 3, S, S); eps in pixel units.

    version 'apgd' (default): the standard version's gradient attacks, APGD-CE then APGD-T on the images still
    correct, with the standard settings (100 steps, 1 restart, the 9 most likely wrong classes as targets).
    version 'standard': torchattacks' AutoAttack (APGD-CE, APGD-T, FAB-T, Square with 5000 queries).
    torchattacks deviates from the standard version in two places, which we correct for both versions: its
    APGD/APGD-T default to 10 steps (standard: 100), and its APGD-T targets every one of the n_classes - 1 wrong
    classes (standard: the top 9), which costs 111x more than standard at 1000 classes.
    steps: APGD's and APGD-T's iterations (100: the standard version; fewer only for the labelled reduced version
    'aaN' of nbhelpers.evaluation, for quick checks).
    """
    import torchattacks

    if version not in ("apgd", "standard"):
        raise ValueError(f"unknown AutoAttack version {version!r}; choose 'apgd' or 'standard'")
    if eps < 0:
        raise ValueError(f"eps must be >= 0 (pixel units, e.g. 4/255), got {eps}")
    if eps == 0:
        return images.detach().clone()
    net = _Float32Logits(classifier) if _is_float64(classifier) else classifier
    if version == "standard":
        atk = torchattacks.AutoAttack(net, norm="Linf", eps=eps, version="standard", n_classes=n_classes,
                                      seed=seed)
        parts = atk._autoattack.attacks
    else:
        parts = [torchattacks.APGD(net, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed),
                 torchattacks.APGDT(net, norm="Linf", eps=eps, steps=steps, n_restarts=1, n_classes=n_classes,
                                    seed=seed)]
        atk = torchattacks.MultiAttack(parts)
    for part in parts:
        if isinstance(part, (torchattacks.APGD, torchattacks.APGDT)):
            part.steps = steps
        if isinstance(part, torchattacks.APGDT):
            part.n_target_classes = min(AUTOATTACK_TARGETS, n_classes - 1)
    was_training = classifier.training
    classifier.eval()
    layers = fast_forward(classifier) if fast else contextlib.nullcontext()
    with frozen(classifier), layers:
        adv = atk(images, labels).detach()
    classifier.train(was_training)
    return adv
