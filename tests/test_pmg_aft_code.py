"""PMG-AFT as its released code runs it (issue 30, item 1): the ``pmg_aft_code`` record against a line-by-line mirror
of PMG_AFT.py at its last commit (serendipity1122/Pre-trained-Model-Guided-Fine-Tuning-for-Zero-Shot-Adversarial-
Robustness a53fdd8, 2024-05-29), on a random-weight ViT-B/32 and CIFAR-sized images.

The mirror is written from the file's lines, named at each function; it is a reading aid and a reference, not
code of the package. ``pmg_aft`` (the paper's formula in TeCoA's units) is shown to differ from it.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers import losses, methods, models, paper_data, training
from nbhelpers.config import FinetuneConfig
from nbhelpers.methods import StepContext
from nbhelpers.zeroshot import build_class_embeddings

# PMG_AFT.py lines 119-120: the ImageNet statistics its clip_img_preprocessing normalises with
PMG_MEAN = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
PMG_STD = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
CLASSES = ["airplane", "automobile", "bird", "cat", "deer"]


def clip_img_preprocessing(x: torch.Tensor) -> torch.Tensor:
    """PMG_AFT.py lines 126-134: upsample(x, 224, 'bicubic') then (x - mean) / std with ImageNet's statistics."""
    x = F.interpolate(x, size=(224, 224), mode="bicubic")
    return (x - PMG_MEAN) / PMG_STD


def multi_gpu_clip(visual: nn.Module, images: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
    """PMG_AFT.py lines 659-669 (multiGPU_CLIP): both embeddings re-normalised, logits_per_image = img @ text.T,
    a raw cosine (the logit scale CLIP's forward applied to the text features is divided away)."""
    img_embed = visual(images)
    img_embed_norm = img_embed / img_embed.norm(dim=-1, keepdim=True)
    text_norm = text_embed / text_embed.norm(dim=-1, keepdim=True)
    return img_embed_norm @ text_norm.t()


def attack_pgd(visual: nn.Module, text_embed: torch.Tensor, x: torch.Tensor, target: torch.Tensor, *, alpha: float,
               attack_iters: int, epsilon: float, start: torch.Tensor) -> torch.Tensor:
    """PMG_AFT.py lines 576-616 (attack_pgd, norm 'l_inf', prompter and add_prompter the null ones): delta from a
    uniform start (here the given start in [-1, 1] times epsilon), clamped to the image box, then attack_iters
    steps of d = clamp(d + alpha sign(grad CE), -eps, eps) clamped to the box; returns delta."""
    criterion = nn.CrossEntropyLoss()
    delta = (start * epsilon).clone()
    delta = torch.max(torch.min(delta, 1 - x), 0 - x)  # clamp(delta, lower_limit - X, upper_limit - X)
    delta.requires_grad = True
    for _ in range(attack_iters):
        output = multi_gpu_clip(visual, clip_img_preprocessing(x + delta), text_embed)
        loss = criterion(output, target)
        loss.backward()
        g = delta.grad.detach()
        d = torch.clamp(delta + alpha * torch.sign(g), min=-epsilon, max=epsilon)
        d = torch.max(torch.min(d, 1 - x), 0 - x)
        delta.data[:, :, :, :] = d
        delta.grad.zero_()
    return delta


def pmg_loss(output: torch.Tensor, output_ori: torch.Tensor, output_clean: torch.Tensor,
             target: torch.Tensor) -> torch.Tensor:
    """PMG_AFT.py lines 214-215 and 736-738: CrossEntropyLoss() + KLDivLoss(reduction="sum") twice, unweighted."""
    criterion, criterion_kl = nn.CrossEntropyLoss(), nn.KLDivLoss(reduction="sum")
    loss_advori = criterion_kl(F.log_softmax(output, dim=1), F.softmax(output_ori, dim=1))
    loss_advclean = criterion_kl(F.log_softmax(output, dim=1), F.softmax(output_clean, dim=1))
    return criterion(output, target) + loss_advclean + loss_advori


@pytest.fixture(scope="module")
def setup():
    """A random ViT-B/32 (ImageNet-normalised as the record says), its engine for pmg_aft_code, and a batch."""
    base = models.create_model_and_transforms("paper", model="ViT-B-32", pretrained="none")[0]
    method = methods.get("pmg_aft_code")
    emb = build_class_embeddings(base, CLASSES, ["This is a photo of a {}"])
    models.set_input_norm(base, method.input_norm)
    student = copy.deepcopy(base)
    with torch.no_grad():  # the student a few steps away from the teacher, so the KL to the teacher is not 0
        for p in student.visual.parameters():
            p.add_(1e-3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel() % 997)))
    teacher, scale = training.teacher_and_scale(method, base, emb)
    cfg = FinetuneConfig.from_params(method="pmg_aft_code", train_eps=4.0, train_alpha=1.0, train_pgd_steps=2)
    opt = torch.optim.SGD(student.visual.parameters(), lr=0.0)
    engine = training.make_engine(cfg, student, emb, opt, teacher=teacher, scale=scale)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g)  # CIFAR's native size: resized inside (bicubic), as PMG-AFT
    y = torch.tensor([0, 1, 2, 3])
    noise = 2 * torch.rand(x.shape, generator=g) - 1
    return base, student, emb, engine, x, y, noise


def test_the_record_is_pmg_aft_code_s_setting():
    method = methods.get("pmg_aft_code")
    assert (method.logit_units, method.input_norm, method.needs_teacher) == ("cosine", "imagenet", True)
    assert method.search is methods.get("pmg_aft").search and method.round2 is methods.get("pmg_aft").round2
    assert (methods.get("pmg_aft").logit_units, methods.get("pmg_aft").input_norm) == ("scaled", "clip")


def test_loss_equals_pmg_aft_py_in_value_and_gradient_on_the_same_logits():
    g = torch.Generator().manual_seed(1)
    adv, ori, clean = (torch.randn(128, 10, generator=g).mul(0.1).requires_grad_() for _ in range(3))
    y = torch.randint(0, 10, (128,), generator=g)
    theirs = pmg_loss(adv, ori, clean, y)
    grads_theirs = torch.autograd.grad(theirs, (adv, clean))
    ours = losses.pmg_aft_code_loss(adv, clean, ori, y)
    grads_ours = torch.autograd.grad(ours, (adv, clean))
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    for a, b in zip(grads_ours, grads_theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert grads_ours[1].abs().sum() > 0  # the clean branch keeps its gradient
    # the paper's formula in TeCoA's units (pmg_aft) is another number on the same logits: the KL terms are means
    paper = losses.pmg_aft_loss(adv, clean, ori, y)
    assert not torch.isclose(paper, theirs, rtol=1e-3)
    torch.testing.assert_close(losses.pmg_aft_loss(adv, clean.detach(), ori, y, alpha=128.0, beta=128.0), theirs,
                               rtol=1e-5, atol=1e-5)  # equal only at alpha = beta = N (the reading)


def test_training_attack_equals_pmg_aft_py_attack_from_the_same_start(setup):
    base, student, emb, engine, x, y, noise = setup
    ours = training.training_attack(engine, x, y, noise)
    delta = attack_pgd(student.visual.eval(), emb, x, y, alpha=1 / 255, attack_iters=2, epsilon=4 / 255, start=noise)
    torch.testing.assert_close(ours, x + delta.detach(), rtol=0, atol=1e-6)
    # the same attack in CLIP's units (logit scale 100 on the random tower) ends elsewhere on some pixels
    scaled = training.make_engine(engine.cfg, student, emb, engine.opt, teacher=engine.teacher,
                                  scale=base.logit_scale())
    assert not torch.allclose(training.training_attack(scaled, x, y, noise), ours, atol=1e-6)


def test_objective_equals_pmg_aft_py_loss_on_the_model_with_its_gradients(setup):
    base, student, emb, engine, x, y, noise = setup
    adv = training.training_attack(engine, x, y, noise)
    ctx = StepContext(engine.cfg, x, adv, y, engine.logits, engine.features, engine.teacher, emb, engine.scale, None)
    params = [p for p in student.visual.parameters() if p.requires_grad][-4:]
    ours = methods.get("pmg_aft_code").objective(ctx)
    grads_ours = torch.autograd.grad(ours, params)
    output = multi_gpu_clip(student.visual, clip_img_preprocessing(adv), emb)
    with torch.no_grad():
        output_ori = multi_gpu_clip(base.visual, clip_img_preprocessing(adv), emb)
    output_clean = multi_gpu_clip(student.visual, clip_img_preprocessing(x), emb)
    theirs = pmg_loss(output, output_ori, output_clean, y)
    grads_theirs = torch.autograd.grad(theirs, params)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_ours, grads_theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert float(ours.detach()) > float(F.cross_entropy(output, y).detach()) + 1e-6  # the KL terms count


def test_pmg_aft_code_trains_and_its_model_keeps_imagenet_normalisation(tmp_path):
    cfg = FinetuneConfig.from_params(method="pmg_aft_code", finetune_steps=2, train_batch_size=16, warmup_steps=1,
                                     finetune_lr=1e-3, checkpoint_every=100)
    run = training.finetune(cfg, out=tmp_path / "pmg_code.pt", progress=False)
    assert torch.allclose(run.model.mean.flatten(), torch.tensor(models.IMAGENET_MEAN))
    base = models.create_model_and_transforms("mini")[0]
    assert any(not torch.equal(a, b) for a, b in zip(run.model.visual.parameters(), base.visual.parameters()))
    assert torch.allclose(base.mean.flatten(), torch.tensor(models.OPENAI_MEAN))  # the others keep CLIP's


def test_pmg_aft_protocol_scores_as_pmg_aft_py_validates():
    """Protocol pmg_aft: TeCoA's pixels, ImageNet normalisation in the model, the attack on cosine logits: equal
    adversarial images to PMG_AFT.py's attack (lines 576-616, as its validate calls it, line 865) from the same
    start; tecoa's pixels are the same and its model CLIP-normalised."""
    from PIL import Image

    from nbhelpers import attacks, evaluation, paper_data
    from nbhelpers.zeroshot import build_head

    model = models.create_model_and_transforms("paper", model="ViT-B-32", pretrained="none", protocol="pmg_aft")[0]
    tecoa = models.create_model_and_transforms("paper", model="ViT-B-32", pretrained="none", protocol="tecoa")[0]
    assert torch.allclose(model.mean.flatten(), torch.tensor(models.IMAGENET_MEAN))
    assert torch.allclose(tecoa.mean.flatten(), torch.tensor(models.OPENAI_MEAN))
    image = Image.fromarray((torch.rand(40, 50, 3, generator=torch.Generator().manual_seed(2)) * 255).byte().numpy())
    for dataset in ("cifar10", "dtd"):
        assert torch.equal(models.preprocess_for_protocol("pmg_aft", dataset)(image),
                           models.preprocess_for_protocol("tecoa", dataset)(image))
    assert evaluation.attack_logit_scale("pmg_aft") == 1.0 and evaluation.attack_logit_scale("tecoa") is None
    assert paper_data.PROTOCOL_RECORDS["pmg_aft"].logit_units == "cosine"
    emb = build_class_embeddings(model, CLASSES, ["This is a photo of a {}"])
    head = build_head(model, emb, logit_scale=evaluation.attack_logit_scale("pmg_aft"))
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(4, 3, 32, 32, generator=g), torch.tensor([4, 3, 2, 1])
    noise = 2 * torch.rand(x.shape, generator=g) - 1
    ours = attacks.pgd_attack(head, x, y, eps=1 / 255, alpha=1 / 255, steps=3, start_noise=noise)
    delta = attack_pgd(model.visual, emb, x, y, alpha=1 / 255, attack_iters=3, epsilon=1 / 255, start=noise)
    torch.testing.assert_close(ours, x + delta.detach(), rtol=0, atol=1e-6)


def test_normalisation_and_logit_unit_names_are_declared_once():
    """The methods' and the models' vocabularies are the protocols' (paper_data), not copies of them."""
    assert methods.INPUT_NORMS is paper_data.PROTOCOL_NORMS and methods.LOGIT_UNITS is paper_data.PROTOCOL_LOGIT_UNITS
    assert set(models.INPUT_NORMS) == set(paper_data.PROTOCOL_NORMS)
