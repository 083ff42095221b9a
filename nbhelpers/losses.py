"""Objectives of the baselines and of TIMA's two modules, as pure functions of logits and embeddings.

Shapes: logits (N, C), labels (N,), unit embeddings (C, D) or (N, D). Which parts are the papers' and which are
this project's reading is said per function ("paper:" / "ours:"). See also the notebooks 03 and 04.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nbhelpers.utils import fp32_at_least

# bump with any change to the numbers this module computes (see utils.numerics_versions)
NUMERICS_VERSION = 1


# ---------------------------------------------------------------- generic pieces
def kl_to(target_logits: torch.Tensor, logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """Mean over samples of KL(softmax(target/T) || softmax(logits/T)) x T^2; target is treated as fixed."""
    t = temperature
    p = F.log_softmax(target_logits.detach() / t, dim=-1)
    q = F.log_softmax(logits / t, dim=-1)
    return F.kl_div(q, p, log_target=True, reduction="batchmean") * t * t


def pairwise_cosine(emb: torch.Tensor) -> torch.Tensor:
    """(C, C) cosine similarities of the rows of emb (C, D)."""
    e = F.normalize(emb, dim=-1)
    return e @ e.T


# ---------------------------------------------------------------- baselines
def pmg_aft_loss(adv_logits: torch.Tensor, clean_logits: torch.Tensor, pretrained_adv_logits: torch.Tensor,
                 labels: torch.Tensor, *, alpha: float = 1.0, beta: float = 1.0) -> torch.Tensor:
    """paper (PMG-AFT, Wang et al.): CE(adv) + alpha KL(pre-trained(adv) || adv) + beta KL(clean || adv)."""
    return (F.cross_entropy(adv_logits, labels) + alpha * kl_to(pretrained_adv_logits, adv_logits)
            + beta * kl_to(clean_logits, adv_logits))


def pmg_aft_code_loss(adv_logits: torch.Tensor, clean_logits: torch.Tensor, pretrained_adv_logits: torch.Tensor,
                      labels: torch.Tensor, *, alpha: float = 1.0, beta: float = 1.0) -> torch.Tensor:
    """PMG-AFT's released code (PMG_AFT.py at a53fdd8, lines 215 and 736-738): CE(adv), mean over the batch, +
    alpha KLDivLoss(reduction="sum")(log_softmax(adv), softmax(pre-trained(adv))) + beta KLDivLoss(reduction="sum")(
    log_softmax(adv), softmax(clean)): both KL terms summed over the batch (N times :func:`pmg_aft_loss`'s at equal
    weights), the clean branch NOT detached (its gradient flows). The code has no alpha, beta (both 1); ours: the
    weights of 06's search. The logits are whatever the caller passes: the code's are raw cosines (no logit scale)."""
    log_adv = F.log_softmax(adv_logits, dim=-1)
    kl_pre = F.kl_div(log_adv, F.softmax(pretrained_adv_logits, dim=-1), reduction="sum")
    kl_clean = F.kl_div(log_adv, F.softmax(clean_logits, dim=-1), reduction="sum")
    return F.cross_entropy(adv_logits, labels) + alpha * kl_pre + beta * kl_clean


def fare_loss(adv_features: torch.Tensor, pretrained_clean_features: torch.Tensor, *,
              relative: bool = False) -> torch.Tensor:
    """paper (FARE, Schlarmann et al.): squared L2 between unnormalised adv and frozen clean image embeddings, mean.

    ours: relative=True divides by the targets' mean squared norm, so the same learning rate works for towers
    whose embedding norms differ by orders of magnitude (the mini CLIP's are ~58, ViT-B/32's ~10).
    """
    target = pretrained_clean_features.detach()
    loss = (adv_features - target).pow(2).sum(-1).mean()
    return loss / target.pow(2).sum(-1).mean() if relative else loss


def coadv_loss(adv_features: torch.Tensor, clean_features: torch.Tensor, *, temperature: float = 0.1,
               reduction: str = "mean") -> torch.Tensor:
    """CoAdv, TeCoA's image-image contrastive adversarial baseline: InfoNCE over the batch, each adversarial
    embedding's positive the clean embedding of the same image, the other images' clean embeddings its negatives;
    features (N, D), cosine similarities / temperature; scalar ("mean" or "sum" over the N images).
    TeCoA names the baseline without its details: the positives, negatives and temperature are ours."""
    a, c = F.normalize(fp32_at_least(adv_features), dim=-1), F.normalize(fp32_at_least(clean_features), dim=-1)
    return F.cross_entropy(a @ c.T / temperature, torch.arange(len(a), device=a.device), reduction=reduction)


def laat_expand(text_emb: torch.Tensor, *, spread: float = 1.5) -> torch.Tensor:
    """ours, after LAAT (Li et al.): rotate the anchors' mean direction to a pole and spread their angles from it.

    The class anchors (C, D) are expressed in a frame whose first axis is their normalised mean; the angle of each
    anchor from that pole is multiplied by `spread` (capped at pi) keeping its direction in the orthogonal
    complement. Pairwise similarities all shrink, and their ranks change: LAAT's 'expansion' that TIMA's
    finding 3 says disturbs the pre-trained semantic structure.
    """
    e = F.normalize(fp32_at_least(text_emb), dim=-1)
    pole = F.normalize(e.mean(0), dim=0)
    cos = (e @ pole).clamp(-1, 1)
    ortho = e - cos[:, None] * pole[None]
    direction = F.normalize(ortho, dim=-1)
    angle = torch.acos(cos) * spread
    angle = angle.clamp(max=math.pi)
    return F.normalize(torch.cos(angle)[:, None] * pole[None] + torch.sin(angle)[:, None] * direction, dim=-1)


# ---------------------------------------------------------------- IAT (text side)
def mhe_energy(emb: torch.Tensor, *, power: float = 2.0, bounded: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """paper (TIMA v1, after Liu et al. 2018): mean over pairs j != k of 1/d^power, or bounded 1/(1 + d^power).

    d is the Euclidean distance of the L2-normalised rows of emb (C, D). Minimising it spreads the classes.
    """
    e = F.normalize(emb, dim=-1)
    d2 = (e[:, None, :] - e[None, :, :]).pow(2).sum(-1)
    c = e.shape[0]
    off = ~torch.eye(c, dtype=torch.bool, device=e.device)
    d_pow = (d2[off] + eps).pow(power / 2)
    energy = 1.0 / (1.0 + d_pow) if bounded else 1.0 / d_pow
    return energy.mean()


def semantic_consistency(tuned: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """ours (SC-MHE's consistency term; the AAAI formula is not public): mean squared difference of the
    off-diagonal pairwise cosine similarities of tuned vs reference embeddings (C, D)."""
    s_t, s_r = pairwise_cosine(tuned), pairwise_cosine(reference.detach())
    off = ~torch.eye(s_t.shape[0], dtype=torch.bool, device=s_t.device)
    return (s_t - s_r)[off].pow(2).mean()


def row_softmax_consistency(tuned: torch.Tensor, reference: torch.Tensor, *, temperature: float = 0.05) -> torch.Tensor:
    """ours (an SC term that allows a uniform spreading): mean over classes of KL(reference row || tuned row) of the
    row-softmax of the off-diagonal pairwise cosines / temperature, (C, D) embeddings. Subtracting the same amount
    from every off-diagonal similarity leaves it unchanged, so MHE may push all classes apart uniformly, while the
    order and relative sizes of each class's neighbours are kept."""
    s_t, s_r = pairwise_cosine(tuned), pairwise_cosine(reference.detach())
    diag = torch.eye(s_t.shape[0], dtype=torch.bool, device=s_t.device)
    t_logits = (s_t / temperature).masked_fill(diag, -1e4)
    r_logits = (s_r / temperature).masked_fill(diag, -1e4)
    return kl_to(r_logits, t_logits)


def consistency_loss(tuned: torch.Tensor, reference: torch.Tensor, *, kind: str = "cosine",
                     temperature: float = 0.05) -> torch.Tensor:
    """IAT's semantic-consistency term by name: "cosine" (:func:`semantic_consistency`) or "row_softmax"
    (:func:`row_softmax_consistency`, at temperature)."""
    if kind == "cosine":
        return semantic_consistency(tuned, reference)
    if kind == "row_softmax":
        return row_softmax_consistency(tuned, reference, temperature=temperature)
    raise ValueError(f"unknown consistency kind {kind!r}; choose 'cosine' or 'row_softmax'")


def image_aware_kd(image_emb: torch.Tensor, tuned_text: torch.Tensor, original_text: torch.Tensor, *,
                   scale: float, temperature: float = 1.0) -> torch.Tensor:
    """ours (IAKD; the paper's form is not public): fixed pre-trained image embeddings (N, D) score the tuned and
    the original class text embeddings (C, D); KL(original || tuned) of the two class distributions."""
    img = F.normalize(image_emb.detach(), dim=-1)
    target = scale * img @ F.normalize(original_text.detach(), dim=-1).T
    student = scale * img @ F.normalize(tuned_text, dim=-1).T
    return kl_to(target, student, temperature=temperature)


# ---------------------------------------------------------------- TAI (image side)
def tam_margins(text_emb: torch.Tensor, *, threshold: float = 0.5, margin: float = 0.1) -> torch.Tensor:
    """paper idea, ours in detail (TIMA v1 TAM): (C, C) margins in cosine units; `margin` where the two classes'
    text cosine similarity exceeds `threshold` (semantically close), 0 elsewhere and on the diagonal."""
    sim = pairwise_cosine(text_emb.detach())
    m = (sim > threshold).to(sim.dtype) * margin
    return m.fill_diagonal_(0.0)


def tam_sample_margins(image_text_cos: torch.Tensor, labels: torch.Tensor, *, threshold: float = 0.5,
                       margin: float = 0.1) -> torch.Tensor:
    """ours, the other reading of TIMA v1's TAM ("when the cosine similarity between the image embedding and the
    corresponding text embedding exceeds a threshold ... an additional margin is added to these classes"): (N, C)
    margins in cosine units, `margin` on each wrong class j whose text the image's embedding is closer to than
    `threshold` (cos(image_i, text_j) (N, C), detached), 0 on the true class. A per-sample gate."""
    m = (image_text_cos.detach() > threshold).to(image_text_cos.dtype) * margin
    return m.scatter(1, labels[:, None], 0.0)


def asam_margins(text_emb: torch.Tensor, *, base: float = 0.05, gain: float = 0.1, offset: float = 0.0,
                 offset_weight: float = 0.0) -> torch.Tensor:
    """ours (ASAM of the AAAI version; formula not public): (C, C) margins in cosine units growing with semantic
    similarity, m_ij = base + gain * max(sim_ij, 0) + offset_weight * |offset|, 0 on the diagonal.

    `offset` is the small-vs-large eps margin offset measured in notebook 01 (in cosine units, i.e. logit offset
    divided by the logit scale); offset_weight = 0 switches the calibration off.
    """
    sim = pairwise_cosine(text_emb.detach()).clamp(min=0)
    m = base + gain * sim + offset_weight * abs(offset)
    return m.fill_diagonal_(0.0)


def margin_logits(logits: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor, *, scale: float,
                  per_sample: bool = False) -> torch.Tensor:
    """Add scale x margin to every non-target logit j (CosFace-style): margins (C, C) per class pair, taken as
    margins[y, j] for a sample of class y; or, with per_sample, margins (N, C) per sample (zero on the true class)."""
    return logits + scale * (margins if per_sample else margins[labels])


def text_aware_kd(student_logits: torch.Tensor, pretrained_logits: torch.Tensor, *,
                  temperature: float = 1.0) -> torch.Tensor:
    """ours (TAKD; the paper's form is not public): KL(pre-trained image model's class distribution, both scored
    against the same class text embeddings || tuned model's)."""
    return kl_to(pretrained_logits, student_logits, temperature=temperature)


def feature_kd(student_features: torch.Tensor, pretrained_features: torch.Tensor) -> torch.Tensor:
    """ours (a TAKD variant): mean of 1 - cos(student image embedding, frozen pre-trained embedding), (N, D) each."""
    return (1 - F.cosine_similarity(student_features, pretrained_features.detach(), dim=-1)).mean()
