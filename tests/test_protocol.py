"""Evaluation protocols (issue 19, item 5): at paper scale our path is the peers' evaluation path, image for image.

Mirrored code (written from reading; not ours), the evaluation path of the TeCoA family:

- cvlab-columbia/ZSRobust4FoundationModel ``finetuning.py`` (commit 1243db6):
  lines 137-145: the CLIP mean/std and ``normalize(X) = (X - mu) / std``;
  lines 148-153: ``clip_img_preprocessing(X)``: ``torch.nn.functional.upsample(X, size=(224, 224), mode='bicubic')``
  then ``normalize``, applied to every batch (clean and ``images + delta``) before the model, in ``attack_pgd``
  and ``validate``;
  lines 316-327: ``preprocess = Compose([ToTensor()])`` and ``preprocess224 = Compose([Resize(256),
  CenterCrop(224), ToTensor()])`` (Resize's default interpolation: bilinear);
  lines 372-430: cifar10, cifar100 and STL10 are read with ``preprocess`` (native 32 / 96 px), every other dataset
  (ImageNet, Caltech, Food101, ...) with ``preprocess224``;
  lines 760-768, ``multiGPU_CLIP``: ``img_embed, scale_text_embed = model(images, text_tokens)``, logits
  ``img_embed @ scale_text_embed.t()``; ``replace/model.py`` lines 372-382, ``CLIP.forward``: both features
  divided by their norms, text features times ``logit_scale.exp()``.
- serendipity1122/Pre-trained-Model-Guided-Fine-Tuning-for-Zero-Shot-Adversarial-Robustness ``utils.py``
  lines 158-172: the same two transforms, with ``to_rgb`` (convert to RGB unless already) before ``Resize(256)``;
  ``load_val_datasets`` (lines 197-257): the same dataset-to-transform mapping, tinyImageNet with preprocess224.
- zhyblue424/TGA-ZSR ``utils.py`` lines 139-146 and ``load_val_datasets`` (lines 164-228):
  ``preprocess = Compose([Resize((224, 224)), ToTensor()])`` for cifar10, cifar100 and STL10 (resized before the
  attack), ``preprocess224`` otherwise.

The model is a random-weight open_clip ViT at 224 px (tiny width for speed; the same structure as ViT-B-32), the
same module in both paths; the images are random PIL images of CIFAR's 32 px, STL's 96 px, TinyImageNet's 64 px and
larger non-square sizes, and one greyscale image.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from nbhelpers import data, models, paper_data
from nbhelpers.zeroshot import ZeroShotClassifier, build_class_embeddings

TINY224 = "tiny-vit-protocol-test"
CONFIG = {"embed_dim": 32, "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32},
          "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}}
CLASSNAMES = ["airplane", "dog", "ship"]
TEMPLATE = "This is a photo of a {}"  # TeCoA's template
NATIVE = ("cifar10", "cifar100", "stl10")


# ---------------------------------------------------------------- the mirror (theirs)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # finetuning.py lines 137-141
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
mu = torch.tensor(CLIP_MEAN).view(3, 1, 1)
std = torch.tensor(CLIP_STD).view(3, 1, 1)


def normalize(X):
    return (X - mu) / std


def clip_img_preprocessing(X):
    img_size = 224
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # upsample's deprecation notice
        X = torch.nn.functional.upsample(X, size=(img_size, img_size), mode='bicubic')
    return normalize(X)


def to_rgb(img):  # PMG-AFT utils.py
    if img.mode != 'RGB':
        img = img.convert('RGB')
    return img


preprocess = transforms.Compose([transforms.ToTensor()])
preprocess224 = transforms.Compose([transforms.Lambda(lambda image: to_rgb(image)), transforms.Resize(256),
                                    transforms.CenterCrop(224), transforms.ToTensor()])
tga_preprocess = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor()])
tga_preprocess224 = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])


def their_transform(dataset: str):
    """finetuning.py / PMG-AFT load_val_datasets: which transform each dataset is read with."""
    return preprocess if dataset in ('cifar10', 'cifar100', 'stl10') else preprocess224


def their_forward(clip, images, text_tokens):
    """replace/model.py CLIP.forward + multiGPU_CLIP: logits per image."""
    image_features = clip.encode_image(images)
    text_features = clip.encode_text(text_tokens)
    image_features = image_features / image_features.norm(dim=1, keepdim=True)
    text_features = text_features / text_features.norm(dim=1, keepdim=True)
    logit_scale = clip.logit_scale.exp()
    img_embed, scale_text_embed = image_features, logit_scale * text_features
    return img_embed @ scale_text_embed.t()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A random-weight open_clip ViT at 224 px with the paper profile's default protocol ('tecoa')."""
    folder = tmp_path_factory.mktemp("configs")
    (folder / f"{TINY224}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(folder)
    model, _ = models.create_model_and_transforms("paper", model=TINY224, pretrained="none")
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def pil_images(sizes: list[tuple[int, int]], *, seed: int, mode: str = "RGB") -> list[Image.Image]:
    """Random PIL images of the given (width, height)."""
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    out = []
    for w, h in sizes:
        arr = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
        out.append(Image.fromarray(arr[..., 0] if channels == 1 else arr, mode=mode))
    return out


CIFAR = pil_images([(32, 32)] * 4, seed=0)
STL = pil_images([(96, 96)] * 3, seed=1)
LARGE = pil_images([(300, 200), (375, 500), (640, 427), (64, 64), (224, 224)], seed=2) + pil_images(
    [(320, 256)], seed=3, mode="L")


def ours(model, images):
    """Our per-image logits: the zero-shot head over the model (resize and normalisation inside)."""
    emb = build_class_embeddings(model, CLASSNAMES, [TEMPLATE], use_cache=False)
    return ZeroShotClassifier(model, emb)(images)


def captured_visual_input(model, images) -> torch.Tensor:
    """What our path feeds the image tower (after the in-model resize and normalisation)."""
    seen = []
    handle = model.clip.visual.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            model.encode_image(images)
    finally:
        handle.remove()
    return seen[0]


# ---------------------------------------------------------------- tests


def test_paper_default_is_the_tecoa_protocol(model):
    assert (model.protocol, model.resize_mode) == ("tecoa", "bicubic")
    _, generic = models.create_model_and_transforms("paper", model=TINY224, pretrained="none")
    for image in LARGE:
        assert torch.equal(generic(image), preprocess224(image))


@pytest.mark.parametrize("dataset", paper_data.list_paper_datasets())
def test_each_dataset_gets_the_peers_transform(dataset):
    mine = models.preprocess_for_protocol("tecoa", dataset, image_size=224)
    theirs = their_transform(dataset)
    for image in CIFAR + STL + LARGE[:-1]:  # the greyscale image: see the test below
        assert torch.equal(mine(image), theirs(image)), (dataset, image.size)


def test_greyscale_images_become_rgb_as_pmg_aft_does():
    grey = LARGE[-1]
    for dataset in ("imagenet", "cifar10"):
        x = models.preprocess_for_protocol("tecoa", dataset, image_size=224)(grey)
        assert x.shape[0] == 3
    assert torch.equal(models.preprocess_for_protocol("tecoa", "imagenet", image_size=224)(grey), preprocess224(grey))


@pytest.mark.parametrize("group,dataset", [("cifar", "cifar10"), ("stl", "stl10"), ("large", "imagenet")])
def test_per_image_logits_equal_the_tecoa_mirror(model, group, dataset):
    pils = {"cifar": CIFAR, "stl": STL, "large": LARGE}[group]
    x_ours = torch.stack([models.preprocess_for_protocol("tecoa", dataset, image_size=224)(im) for im in pils])
    x_theirs = torch.stack([their_transform(dataset)(im) for im in pils])
    assert torch.equal(x_ours, x_theirs)
    assert x_ours.shape[-1] == {"cifar": 32, "stl": 96, "large": 224}[group]  # attacked at native resolution
    assert torch.equal(captured_visual_input(model, x_ours), clip_img_preprocessing(x_theirs))
    tokens = model.tokenize([TEMPLATE.format(c) for c in CLASSNAMES])
    with torch.no_grad():
        mine, theirs = ours(model, x_ours), their_forward(model.clip, clip_img_preprocessing(x_theirs), tokens)
    assert mine.shape == (len(pils), len(CLASSNAMES))
    assert torch.allclose(mine, theirs, rtol=1e-5, atol=1e-5), (mine - theirs).abs().max()
    assert torch.equal(mine.argmax(1), theirs.argmax(1))


def test_the_attack_gradient_lives_at_native_resolution_as_theirs(model):
    """attack_pgd differentiates CE through clip_img_preprocessing w.r.t. the 32 px delta: so does ours."""
    x = torch.stack([preprocess(im) for im in CIFAR])
    y = torch.tensor([0, 1, 2, 0])
    tokens = model.tokenize([TEMPLATE.format(c) for c in CLASSNAMES])
    mine_x, their_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    F.cross_entropy(ours(model, mine_x), y, reduction="sum").backward()
    F.cross_entropy(their_forward(model.clip, clip_img_preprocessing(their_x), tokens), y, reduction="sum").backward()
    assert mine_x.grad.shape == (4, 3, 32, 32)
    assert torch.allclose(mine_x.grad, their_x.grad, rtol=1e-4, atol=1e-7), (mine_x.grad - their_x.grad).abs().max()


def test_tga_zsr_resizes_cifar_and_stl_before_the_attack():
    for dataset in ("cifar100", "stl10", "food101"):
        mine = models.preprocess_for_protocol("tga_zsr", dataset, image_size=224)
        theirs = tga_preprocess if dataset in NATIVE else tga_preprocess224
        for image in CIFAR + STL + LARGE[:-1]:
            x = mine(image)
            assert x.shape == (3, 224, 224) and torch.equal(x, theirs(image))
    assert models.in_model_resize("tga_zsr") == "bicubic"  # their clip_img_preprocessing: a no-op at 224


def test_clip_protocol_is_open_clips_own_eval_transform():
    full = open_clip.image_transform(224, is_train=False, mean=models.OPENAI_MEAN, std=models.OPENAI_STD)
    norm = transforms.Normalize(models.OPENAI_MEAN, models.OPENAI_STD)
    before = transforms.Compose([transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
                                 transforms.CenterCrop(224), transforms.Lambda(lambda im: im.convert("RGB")),
                                 transforms.ToTensor()])  # the paper profile's preprocess before issue 19
    for dataset in ("cifar10", "imagenet", None):
        mine = models.preprocess_for_protocol("clip", dataset, image_size=224)
        for image in CIFAR[:1] + LARGE:
            assert torch.equal(norm(mine(image)), full(image))
            assert torch.equal(mine(image), before(image))
    for image in CIFAR[:1] + LARGE:  # the paper default (data.py's fallback) is tecoa's generic transform now
        assert torch.equal(models.paper_preprocess()(image), preprocess224(image))


def test_mini_profile_is_unchanged(mini_model):
    """Mini keeps its own preprocess and bilinear in-model resize, bit for bit."""
    assert (mini_model.protocol, mini_model.resize_mode, mini_model.load_report) == ("mini", "bilinear", None)
    x = torch.rand(3, 3, 48, 40)
    with torch.no_grad():
        got = mini_model.encode_image(x)
        resized = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=False)
        want = mini_model.clip.encode_image((resized - mini_model.mean) / mini_model.std, normalize=True)
        same_size = torch.rand(2, 3, 32, 32)
        assert torch.equal(mini_model.encode_image(same_size), mini_model.clip.encode_image(
            (same_size - mini_model.mean) / mini_model.std, normalize=True))
    assert torch.equal(got, want)
    _, pre = models.create_model_and_transforms("mini")
    old = transforms.Compose([transforms.Lambda(lambda im: im if isinstance(im, torch.Tensor) else
                                                transforms.functional.to_tensor(im.convert("RGB"))),
                              transforms.Resize((32, 32), antialias=True)])
    for image in CIFAR[:1] + LARGE[:2] + [torch.rand(3, 40, 40)]:
        assert torch.equal(pre(image), old(image))
    with pytest.raises(ValueError, match="the mini profile has one protocol"):
        models.create_model_and_transforms("mini", protocol="tecoa")


def test_bad_protocol_or_dataset_names_are_refused():
    with pytest.raises(ValueError, match=r"unknown protocol 'teco'.*tecoa"):
        models.preprocess_for_protocol("teco", "cifar10")
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar-10'.*cifar10"):
        models.preprocess_for_protocol("tecoa", "cifar-10")
    with pytest.raises(ValueError, match="unknown protocol"):
        models.create_model_and_transforms("paper", pretrained="none", protocol="robustbench")
    with pytest.raises(ValueError, match="resize_mode 'area'"):
        models.ClipModel(torch.nn.Identity(), tokenizer=None, image_size=32, resize_mode="area")


def test_protocols_are_records_naming_the_peer_they_follow():
    """Issue 30 items 2 and 7: each protocol is one record (pixels, resize, normalisation, text, attack logit units,
    the peer file it follows); the in-model resize and the protocol names come from it."""
    from nbhelpers import models, paper_data

    assert set(paper_data.PROTOCOL_RECORDS) == set(paper_data.PROTOCOLS) == set(models.IN_MODEL_RESIZE)
    for name, record in paper_data.PROTOCOL_RECORDS.items():
        assert record.name == name and record.follows and models.IN_MODEL_RESIZE[name] == record.resize
        assert record.pixels in paper_data.PROTOCOL_PIXELS and record.text in paper_data.PROTOCOL_TEXT
        assert record.normalisation in models.INPUT_NORMS and record.logit_units in paper_data.PROTOCOL_LOGIT_UNITS
    assert (paper_data.PROTOCOL_RECORDS["pmg_aft"].normalisation, paper_data.PROTOCOL_RECORDS["pmg_aft"].logit_units
            ) == ("imagenet", "cosine")


def test_tga_zsr_scores_with_its_per_dataset_prompts_and_tecoa_with_its_one_template(tmp_path, monkeypatch):
    """TGA-ZSR's replace/datasets templates (a data file with each row's source) under tga_zsr; TeCoA's elsewhere."""
    import csv

    from nbhelpers import data, paper_data
    from paper_fixtures import write_fixture

    with open(paper_data.PROTOCOL_TEXT_DIR / "tga_zsr.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10 and all(r["source"].startswith("zhyblue424/TGA-ZSR@") and r["dataset"] in
                                   paper_data.PAPER_DATASETS for r in rows)
    write_fixture("eurosat", tmp_path)
    tga = data.load_eval_set("paper", "eurosat", n=4, data_root=tmp_path,
                             preprocess=models.ProtocolPreprocess("tga_zsr"))
    tecoa = data.load_eval_set("paper", "eurosat", n=4, data_root=tmp_path,
                               preprocess=models.ProtocolPreprocess("tecoa"))
    assert tga.templates == ["A centered satellite photo of {}."] and tecoa.templates == ["This is a photo of a {}"]
    assert tga.classnames == tecoa.classnames
    names, templates = paper_data.text_for("pcam", "tga_zsr", paper_data.get_classnames("pcam"))
    assert templates == ["{}"] and names[0].startswith("Tthis is a photo of healthy")
    assert paper_data.text_for("cifar10", "tga_zsr", ["a", "b"]) == (["a", "b"], ["This is a photo of a {}"])
    assert paper_data.text_for("country211", "tecoa", ["x"]) == (["x"], ["A photo I took in {}."])
    assert paper_data.text_for("dtd", "custom", ["x"]) == (["x"], ["This is a photo of a {}"])


def test_clip_benchmark_scores_with_its_template_ensembles():
    from nbhelpers import paper_data

    names, templates = paper_data.text_for("cifar10", "clip_benchmark", ["airplane"])
    assert len(templates) == 18 and templates[0] == "a photo of a {}." and names == ["airplane"]
    assert len(paper_data.text_for("imagenet", "clip_benchmark", ["tench"])[1]) == 80
    assert paper_data.text_for("caltech256", "clip_benchmark", ["x"])[1] == ["This is a photo of a {}"]
    assert all(t.format("x") != t for t in templates)  # every template takes the class name
    assert models.preprocess_for_protocol("clip_benchmark", "cifar10").__repr__() == \
        models.preprocess_for_protocol("clip", "cifar10").__repr__()
    rows = (paper_data.PROTOCOL_TEXT_DIR / "clip_benchmark.csv").read_text().splitlines()[1:]
    assert len(rows) == 200 and all("en_zeroshot_classification_templates.json" in r for r in rows)


def test_text_without_images_follows_the_protocol():
    """data.classnames_for (03's text structure) reads the protocol's class text, as the evaluation does."""
    names = paper_data.get_classnames("pcam")
    assert data.classnames_for("paper", "pcam", protocol="tga_zsr") == paper_data.text_for("pcam", "tga_zsr", names)
    assert data.classnames_for("paper", "pcam", protocol="tga_zsr") != data.classnames_for("paper", "pcam")
    assert data.classnames_for("paper", "pcam") == (list(names), [paper_data.template_for("pcam")])
