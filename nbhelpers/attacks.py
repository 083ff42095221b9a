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
# how PGD's random start is drawn: "legacy" (torch.rand on the CPU from a generator seeded once per call, advanced
# batch by batch: depends on the batch size) or "counter" (a counter-based hash of (seed, stream, image index,
# pixel index) in integer tensor ops on the images' device: the same bits on every device, batch size and split)
START_SCHEMES: tuple[str, ...] = ("legacy", "counter")
_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # 2^32 / golden ratio: separates the words that key a stream


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


def _mul32(x: torch.Tensor | int, c: int) -> torch.Tensor | int:
    """x * c mod 2^32 for x in [0, 2^32) (int64 tensor or int) and a 32-bit constant c, exact in int64 (the product
    is split at 16 bits so nothing exceeds 2^49: no signed overflow on any device)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _hash32(x: torch.Tensor | int) -> torch.Tensor | int:
    """A bijective 32-bit integer hash (Wellons' lowbias32) of x in [0, 2^32), elementwise; int64 tensor or int."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _stream_keys(seed: int, stream: int) -> tuple[int, int, int]:
    """Three 32-bit keys of a (seed, stream) pair: seed any int >= 0 (up to 64 bits), stream an int >= 0."""
    if seed < 0 or stream < 0:
        raise ValueError(f"seed and stream must be >= 0, got seed={seed}, stream={stream}")
    k = _hash32(seed & _M32) ^ _hash32(((seed >> 32) & _M32) ^ _GOLDEN)
    k = _hash32(k ^ _hash32((stream & _M32) ^ (2 * _GOLDEN & _M32)) ^ _hash32((stream >> 32) & _M32))
    return k, _hash32(k ^ _GOLDEN), _hash32(k ^ (3 * _GOLDEN & _M32))


def counter_uniform(seed: int, index: torch.Tensor, numel: int, *, stream: int = 0,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Uniform floats (N, numel) in [0, 1) (float32, multiples of 2^-24) for images index (N,) (int, >= 0: each
    image's position in the whole evaluated set), pixel by pixel: a counter-based hash of (seed, stream, image,
    pixel) in integer tensor ops, so every device, batch size and split of the images gives the same bits.

    stream: a second counter (e.g. the training step), so that one seed keys independent sequences. device: where
    the numbers are drawn (default: index's device)."""
    device = index.device if device is None else torch.device(device)
    if index.dim() != 1 or (index.device.type == "cpu" and index.numel() and int(index.min()) < 0):
        raise ValueError(f"index must be a 1-D tensor of image positions >= 0, got shape {tuple(index.shape)}")
    index = index.to(device=device, dtype=torch.int64)  # the values are checked where that costs no device sync
    if numel < 1:
        raise ValueError(f"numel must be >= 1, got {numel}")
    k0, k1, k2 = _stream_keys(seed, stream)
    lo, hi = index & _M32, (index >> 32) & _M32
    a = _hash32(_hash32(lo ^ k0) ^ _hash32(hi ^ k1))  # two words per image
    b = _hash32(a ^ k2)
    pixel = torch.arange(numel, device=device, dtype=torch.int64)
    out = torch.empty(len(index), numel, dtype=torch.float32, device=device)
    rows = max(1, (1 << 23) // numel)  # bounds the int64 temporaries (~64 MiB each)
    for i in range(0, len(index), rows):
        u = _hash32(((_hash32(pixel[None] ^ a[i:i + rows, None]) + b[i:i + rows, None]) & _M32))
        out[i:i + rows] = (u >> 8).to(torch.float32) * 2.0 ** -24  # 24 bits: exact in float32
    return out


def counter_start_noise(seed: int, index: torch.Tensor, shape: tuple[int, ...] | torch.Size, *, stream: int = 0,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """PGD start noise (N, *shape) in [-1, 1) (float32, exact) of images index (N,) from :func:`counter_uniform`:
    2u - 1, the same bits on every device; shape: one image's (3, S, S)."""
    numel = 1
    for d in shape:
        numel *= int(d)
    u = counter_uniform(seed, index, numel, stream=stream, device=device)
    return (2 * u - 1).reshape(len(index), *shape)


def check_start_scheme(scheme: str) -> None:
    """Refuse an unknown start scheme before any work."""
    if scheme not in START_SCHEMES:
        raise ValueError(f"unknown attack start scheme {scheme!r}; choose one of {START_SCHEMES}")


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
    lo, hi = projection_bounds(x0, eps)
    was_training = module.training
    module.eval()
    with frozen(module), torch.enable_grad(), layers:
        for _ in range(steps):
            x.requires_grad_(True)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
                out = module(x)
            (grad,) = torch.autograd.grad(objective(out), x)
            x = pgd_update(x.detach(), grad, lo, hi, alpha=alpha)
    module.train(was_training)
    return x.detach().contiguous()


def projection_bounds(x0: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The box PGD projects onto, once per attack: (max(x0 - eps, 0), min(x0 + eps, 1)), each x0's shape and layout:
    the eps ball around x0 (N, 3, S, S) intersected with the unit box (never empty: x0 lies in both)."""
    return (x0 - eps).clamp_(min=0), (x0 + eps).clamp_(max=1)


def pgd_update(x: torch.Tensor, grad: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, *,
               alpha: float) -> torch.Tensor:
    """One signed-gradient step projected onto [lo, hi] (:func:`projection_bounds`): 3 kernels per step, bit-equal
    to the 8 of ``torch.min(torch.max(x + alpha * sign(grad), x0 - eps), x0 + eps).clamp(0, 1)`` (alpha * sign is
    exact, so add(alpha=) rounds once as the two ops do; clamping to the intersection of two boxes that meet equals
    clamping to one, then the other)."""
    return torch.add(x, grad.sign(), alpha=alpha).clamp_(min=lo, max=hi)


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


class _Bf16Logits(nn.Module):
    """A classifier run under bf16 autocast on its inputs' device, its logits (N, C) handed over in float32 (so
    torchattacks' losses and checks stay in fp32, as our PGD's objective does)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """float32 logits (N, C) of images (N, 3, S, S), computed under bf16 autocast."""
        with torch.autocast(images.device.type, dtype=torch.bfloat16):
            return self.classifier(images).float()


def autoattack(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float,
               n_classes: int, seed: int = 0, version: str = "apgd", fast: bool = False,
               amp: bool = False, steps: int = 100) -> torch.Tensor:
    """AutoAttack (torchattacks, L-inf) adversarial images (N, 3, S, S); eps in pixel units.

    version 'apgd' (default): the standard version's gradient attacks, APGD-CE then APGD-T on the images still
    correct, with the standard settings (100 steps, 1 restart, the 9 most likely wrong classes as targets).
    version 'standard': torchattacks' AutoAttack (APGD-CE, APGD-T, FAB-T, Square with 5000 queries).
    torchattacks deviates from the standard version in two places, which we correct for both versions: its
    APGD/APGD-T default to 10 steps (standard: 100), and its APGD-T targets every one of the n_classes - 1 wrong
    classes (standard: the top 9), which costs 111x more than standard at 1000 classes.
    amp: the classifier's forward passes under bf16 autocast, logits handed over in fp32 (for GPUs; its strength
    against fp32 is checked with the paired bound in tests/test_gpu_path.py).
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
    if amp:
        net = _Bf16Logits(net)
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
