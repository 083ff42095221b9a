import pytest
import torch

from nbhelpers import attacks, metrics, world
from nbhelpers.training import ImageEncoder


@pytest.fixture(scope="module")
def batch():
    return world.generate_task("objects", 128, seed=0)


def test_perturbation_stays_within_eps_and_unit_box(objects_head, batch):
    x, y = batch
    for eps in (1 / 255, 4 / 255, 16 / 255):
        adv = attacks.pgd_attack(objects_head, x, y, eps=eps, steps=3, generator=torch.Generator().manual_seed(0))
        assert float((adv - x).abs().max()) <= eps + 1e-6
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1


@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_attack_objective_does_not_fall(objects_head, batch, loss):
    x, y = batch
    with torch.no_grad():
        before = attacks.attack_objective(objects_head(x), y, loss)
    adv = attacks.pgd_attack(objects_head, x, y, eps=2 / 255, steps=5, loss=loss, random_start=False)
    with torch.no_grad():
        after = attacks.attack_objective(objects_head(adv), y, loss)
    assert after > before + 1.0  # the attack must actually climb its objective


def test_eps_zero_gives_clean_accuracy(objects_head, batch):
    x, y = batch
    clean = metrics.predict_logits(objects_head, x, y, eps=0.0)
    with torch.no_grad():
        direct = objects_head(x)
    assert torch.allclose(clean, direct, atol=1e-5)
    adv0 = attacks.pgd_attack(objects_head, x, y, eps=0.0, steps=10)
    assert torch.equal(adv0, x)


def test_no_gradient_leaks_into_weights_and_flags_are_restored(objects_head, batch):
    x, y = batch
    params = list(objects_head.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.grad = None
    attacks.pgd_attack(objects_head, x[:16], y[:16], eps=4 / 255, steps=2)
    assert all(p.grad is None for p in params)
    assert [p.requires_grad for p in params] == flags


def test_our_pgd_agrees_with_torchattacks(objects_head):
    x, y = world.generate_task("objects", 384, seed=5)
    eps = 2 / 255
    ours = metrics.accuracy(objects_head(attacks.pgd_attack(objects_head, x, y, eps=eps, steps=10,
                                                            generator=torch.Generator().manual_seed(0))), y)
    ref = metrics.accuracy(objects_head(attacks.torchattacks_pgd(objects_head, x, y, eps=eps, steps=10)), y)
    clean = metrics.accuracy(objects_head(x), y)
    assert ours < clean - 0.1  # the attack bites at all
    # binomial noise on 384 samples is about 2.5 points; allow 3 sigma
    assert abs(ours - ref) <= 0.075, (ours, ref)


def test_bad_attack_arguments_fail_before_work(objects_head, batch):
    x, y = batch
    with pytest.raises(ValueError, match="eps must be >= 0"):
        attacks.pgd_attack(objects_head, x, y, eps=-1 / 255)
    with pytest.raises(ValueError, match="unknown attack loss"):
        attacks.pgd_attack(objects_head, x, y, eps=1 / 255, loss="l2")


def test_embedding_attack_is_bounded_climbs_and_leaks_nothing(mini_model, batch):
    x, _ = batch
    encoder = ImageEncoder(mini_model)
    assert not encoder.training, "the wrapper must mirror the model's eval mode (BatchNorm stays frozen)"
    with torch.no_grad():
        targets = encoder(x)
    params = list(mini_model.parameters())
    flags = [p.requires_grad for p in params]
    for eps in (1 / 255, 4 / 255):
        adv = attacks.embedding_pgd_attack(encoder, x, targets, eps=eps, steps=3,
                                           generator=torch.Generator().manual_seed(0))
        assert float((adv - x).abs().max()) <= eps + 1e-6
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert all(p.grad is None for p in params) and [p.requires_grad for p in params] == flags
    assert not mini_model.training and not encoder.training
    with torch.no_grad():
        start = attacks.embedding_distance(encoder(x), targets)
        after = attacks.embedding_distance(encoder(adv), targets)
    assert start == 0 and after > 100.0  # the unnormalised embeddings have norm ~58: this is a real move


def test_embedding_attack_moves_embeddings_further_than_the_ce_attack(mini_model, objects_head, batch):
    """FARE's attack maximises the embedding distance itself; the supervised CE attack only moves it on the way."""
    x, y = batch
    encoder = ImageEncoder(mini_model)
    with torch.no_grad():
        targets = encoder(x)
    kw = dict(eps=2 / 255, steps=3, start_noise=2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) - 1)
    label_free = attacks.embedding_pgd_attack(encoder, x, targets, **kw)
    supervised = attacks.pgd_attack(objects_head, x, y, **kw)
    with torch.no_grad():
        d_free = attacks.embedding_distance(encoder(label_free), targets)
        d_ce = attacks.embedding_distance(encoder(supervised), targets)
    assert d_free > 1.2 * d_ce, (float(d_free), float(d_ce))


def test_embedding_attack_refuses_mismatched_targets(mini_model, batch):
    x, _ = batch
    encoder = ImageEncoder(mini_model)
    with pytest.raises(ValueError, match="targets must be"):
        attacks.embedding_pgd_attack(encoder, x, torch.zeros(len(x) - 1, 8), eps=1 / 255)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        attacks.embedding_pgd_attack(encoder, x, torch.zeros(len(x), 8), eps=-1 / 255)
    with pytest.raises(ValueError, match="start_noise must have"):
        attacks.embedding_pgd_attack(encoder, x, torch.zeros(len(x), 8), eps=1 / 255, start_noise=torch.zeros(1))
