"""Each loss against a small hand-computed case."""
import math

import pytest
import torch
import torch.nn.functional as F

from nbhelpers import losses


def test_mhe_on_three_unit_vectors():
    # orthonormal e1, e2, e3: every pairwise distance is sqrt(2), so d^2 = 2
    e = torch.eye(3)
    assert losses.mhe_energy(e, bounded=False).item() == pytest.approx(1 / 2, rel=1e-5)
    assert losses.mhe_energy(e, bounded=True).item() == pytest.approx(1 / 3, rel=1e-5)
    # three vectors at 120 degrees in a plane: d^2 = 3 for every pair
    tri = torch.tensor([[1.0, 0.0], [-0.5, math.sqrt(3) / 2], [-0.5, -math.sqrt(3) / 2]])
    assert losses.mhe_energy(tri, bounded=True).item() == pytest.approx(1 / 4, rel=1e-5)
    # spreading lowers the energy: a close pair raises it
    close = torch.tensor([[1.0, 0.0], [0.99, 0.14], [-1.0, 0.0]])
    assert losses.mhe_energy(close) > losses.mhe_energy(tri)


def test_margin_on_a_three_class_logit_vector():
    logits = torch.tensor([[2.0, 1.0, 0.5]])
    labels = torch.tensor([0])
    margins = torch.tensor([[0.0, 0.1, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 0.0]])
    out = losses.margin_logits(logits, labels, margins, scale=10.0)
    assert out[0].tolist() == pytest.approx([2.0, 2.0, 0.5])
    # TAM: margin only where the text similarity exceeds the threshold
    text = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])  # cos(0,1)=0.8, cos(0,2)=0, cos(1,2)=0.6
    tam = losses.tam_margins(text, threshold=0.7, margin=0.2)
    assert torch.allclose(tam, torch.tensor([[0, 0.2, 0], [0.2, 0, 0], [0, 0, 0]]))
    asam = losses.asam_margins(text, base=0.01, gain=0.1)
    assert asam[0, 1].item() == pytest.approx(0.01 + 0.08) and asam[0, 2].item() == pytest.approx(0.01)
    assert asam[1, 2].item() == pytest.approx(0.01 + 0.06) and asam[0, 0].item() == 0


def test_kl_terms_are_zero_when_models_agree_and_positive_otherwise():
    z = torch.randn(5, 4)
    y = torch.randint(4, (5,))
    assert losses.kl_to(z, z).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.text_aware_kd(z, z).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.pmg_aft_loss(z, z, z, y).item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-5)
    assert losses.kl_to(z, z + torch.randn(5, 4)).item() > 0
    t = F.normalize(torch.randn(6, 8), dim=-1)
    img = F.normalize(torch.randn(10, 8), dim=-1)
    assert losses.image_aware_kd(img, t, t, scale=20.0).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.semantic_consistency(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_hand_value():
    p = torch.log(torch.tensor([[0.5, 0.5]]))
    q = torch.log(torch.tensor([[0.9, 0.1]]))
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert losses.kl_to(p, q).item() == pytest.approx(expected, rel=1e-5)


def test_laat_expansion_lowers_similarities_and_keeps_unit_norm():
    t = F.normalize(torch.randn(10, 16) + 2.0, dim=-1)  # clustered anchors
    ex = losses.laat_expand(t, spread=2.0)
    assert torch.allclose(ex.norm(dim=1), torch.ones(10), atol=1e-5)
    off = ~torch.eye(10, dtype=torch.bool)
    assert losses.pairwise_cosine(ex)[off].mean() < losses.pairwise_cosine(t)[off].mean()


def test_fare_hand_value():
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])
    assert losses.fare_loss(a, b).item() == pytest.approx(5.0)
    c = torch.tensor([[3.0, 4.0]])  # |c|^2 = 25
    assert losses.fare_loss(a, c, relative=True).item() == pytest.approx((4 + 4) / 25)


def test_per_sample_tam_gates_on_the_image_text_cosine_and_spares_the_true_class():
    cos = torch.tensor([[0.9, 0.6, 0.2], [0.7, 0.3, 0.55]])
    labels = torch.tensor([0, 2])
    m = losses.tam_sample_margins(cos, labels, threshold=0.5, margin=0.1)
    assert torch.allclose(m, torch.tensor([[0.0, 0.1, 0.0], [0.1, 0.0, 0.0]]))
    logits = torch.zeros(2, 3)
    out = losses.margin_logits(logits, labels, m, scale=10.0, per_sample=True)
    assert torch.allclose(out, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))


def test_row_softmax_consistency_ignores_a_uniform_shift_and_sees_a_reordering():
    ref = torch.nn.functional.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert losses.row_softmax_consistency(ref, ref).item() == pytest.approx(0.0, abs=1e-7)
    # the defining property, on the similarity logits: one shift of every off-diagonal similarity changes nothing
    s = losses.pairwise_cosine(ref)
    diag = torch.eye(6, dtype=torch.bool)
    shifted = losses.kl_to((s / 0.05).masked_fill(diag, -1e4), ((s - 0.2) / 0.05).masked_fill(diag, -1e4))
    assert shifted.item() == pytest.approx(0.0, abs=1e-5)
    permuted = ref[torch.tensor([1, 0, 2, 3, 5, 4])]
    assert losses.row_softmax_consistency(permuted, ref).item() > 0.01
    assert losses.consistency_loss(permuted, ref, kind="cosine").item() > 0
    with pytest.raises(ValueError, match="consistency kind"):
        losses.consistency_loss(ref, ref, kind="rank")


def test_feature_kd_is_one_minus_cosine():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert losses.feature_kd(a, a).item() == pytest.approx(0.0, abs=1e-7)
    assert losses.feature_kd(a, -a).item() == pytest.approx(2.0)
    assert losses.feature_kd(a, torch.tensor([[0.0, 1.0], [0.0, 1.0]])).item() == pytest.approx(0.5)
