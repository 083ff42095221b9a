"""Every released weights format loads exactly, and bad input stops before any work (issue 19, items 1 and 6).

No real weights can be downloaded here, so each test writes its file in the exact structure the peer's code
writes (keys, nesting, prefixes, dtypes, extra entries; read from their repositories, cited at each writer), with
random weights, and compares every loaded tensor with the written one. Most tests use a tiny open_clip ViT
(``TINY``: the structure of ViT-B-32 at width 64, 2 layers, 64 px); ViT-B-32 itself is covered by the OpenAI
TorchScript archive and a RobustVLM image tower on top of it.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import pickle
import types
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from nbhelpers import models, training
from nbhelpers.checkpoints import CheckpointError
from nbhelpers.config import FinetuneConfig

TINY = "tiny-vit-ckpt-test"
TINY_WIDE = "tiny-vit-ckpt-test-wide"
_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}
CONFIGS = {
    TINY: {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
           "text_cfg": _TEXT},
    TINY_WIDE: {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 2, "width": 96, "patch_size": 16},
                "text_cfg": _TEXT},
}
OPENAI_SCALARS = ("input_resolution", "context_length", "vocab_size")


# ---------------------------------------------------------------- models and the peers' writers


@pytest.fixture(scope="module", autouse=True)
def tiny_configs(tmp_path_factory):
    """Register the tiny test architectures with open_clip (a custom config, as the mini CLIP's)."""
    folder = tmp_path_factory.mktemp("configs")
    for name, cfg in CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    return folder


def random_clip(name: str, seed: int) -> nn.Module:
    """A random-weight open_clip CLIP of architecture `name` (QuickGELU, as OpenAI's)."""
    torch.manual_seed(seed)
    return models.build_open_clip(name, pretrained="none", quick_gelu=True).clip


@pytest.fixture(scope="module")
def vitb32():
    """The random-weight ViT-B-32 of build_open_clip (built once per module: ~150M parameters)."""
    return models.build_open_clip("ViT-B-32", pretrained="none").clip


def openai_vision_keys(layers: int) -> list[str]:
    """Key names and order of OpenAI's VisionTransformer.state_dict() (clip/model.py; TeCoA's and PMG-AFT's
    replace/model.py: conv1, class_embedding, positional_embedding, ln_pre, transformer.resblocks.i.{attn, ln_1,
    mlp.c_fc, mlp.c_proj, ln_2}, ln_post, proj; prompt_len=0 adds nothing)."""
    block = ["attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias", "ln_1.weight",
             "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias", "ln_2.weight",
             "ln_2.bias"]
    return (["conv1.weight", "class_embedding", "positional_embedding", "ln_pre.weight", "ln_pre.bias"]
            + [f"transformer.resblocks.{i}.{k}" for i in range(layers) for k in block]
            + ["ln_post.weight", "ln_post.bias", "proj"])


def openai_visual_state(visual: nn.Module) -> OrderedDict:
    """The image tower as OpenAI's VisionTransformer.state_dict() gives it (its key order), fp32 cloned tensors."""
    sd = visual.state_dict()
    layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    keys = openai_vision_keys(layers)
    assert set(keys) == set(sd), "open_clip's ViT keys differ from OpenAI's: the writers below would be wrong"
    return OrderedDict((k, sd[k].detach().clone()) for k in keys)


def to_openai_fp16(visual_state: dict[str, torch.Tensor]) -> OrderedDict:
    """OpenAI's clip.model.convert_weights on an image tower (what clip.load gives on CUDA without .float()):
    conv / linear / attention weights and biases and ``proj`` in fp16; embeddings and LayerNorms stay fp32."""
    half = ("conv1.weight", "proj")
    return OrderedDict((k, v.half() if k in half or ".attn." in k or ".mlp." in k else v)
                       for k, v in visual_state.items())


class _NumpyOnePickler(pickle._Pickler):
    """Pickles numpy scalars as numpy 1.x did (GLOBAL 'numpy.core.multiarray scalar'): the TeCoA family saved
    with numpy 1.23.3 (TeCoA requirement_final.txt, PMG-AFT requirements.txt)."""

    def save_global(self, obj, name=None):
        if obj is np._core.multiarray.scalar:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


NUMPY1_PICKLE = types.SimpleNamespace(Pickler=_NumpyOnePickler, Unpickler=pickle.Unpickler, __name__="numpy1_pickle")


class NullPrompter(nn.Module):
    """TeCoA/PMG-AFT models/prompters.py NullPrompter: no parameters (fine-tuning)."""

    def forward(self, x):
        return x


class TokenPrompter(nn.Module):
    """TeCoA/PMG-AFT models/prompters.py TokenPrompter(prompt_len): prompt (1, prompt_len, 768)."""

    def __init__(self, prompt_len: int) -> None:
        super().__init__()
        self.prompt = nn.Parameter(torch.randn([1, prompt_len, 768]))


def sgd_state(visual_state: dict[str, torch.Tensor]) -> dict:
    """optimizer.state_dict() of TeCoA's SGD over model.module.visual.parameters() after a step (momentum buffers)."""
    params = [nn.Parameter(v.detach().clone().float()) for v in visual_state.values()]
    opt = torch.optim.SGD(params, lr=1e-5, momentum=0.9, weight_decay=0.0)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    return opt.state_dict()


def write_tecoa_family(path: Path, visual: nn.Module, *, peer: str) -> OrderedDict:
    """save_checkpoint({...}) of the TeCoA family, as torch.save writes it; returns the written image tower.

    tecoa: ZSRobust4FoundationModel finetuning.py lines 525-532 (epoch, state_dict = prompter.state_dict(),
    add_prompter, vision_encoder_state_dict = model.module.visual.state_dict(), best_acc1 = np.mean(acc_all),
    optimizer), prompters wrapped in DataParallel (lines 240-241), numpy 1.23.3. pmg_aft: PMG_AFT.py lines 447-453,
    the same dict. tga_zsr: TGA-ZSR.py lines 366-373, no DataParallel, best_acc1 = 0. (a float, line 236), the
    vision state last. resaved_numpy2: a TeCoA file re-saved under numpy 2 (numpy._core names)."""
    vision = openai_visual_state(visual)
    wrap = peer != "tga_zsr"
    prompter = nn.DataParallel(NullPrompter()) if wrap else NullPrompter()
    add_prompter = nn.DataParallel(TokenPrompter(0)) if wrap else TokenPrompter(0)
    best = 0.0 if peer == "tga_zsr" else np.mean([41.25, 38.5])
    assert peer == "tga_zsr" or type(best) is np.float64
    head = {"epoch": 10, "state_dict": prompter.state_dict(), "add_prompter": add_prompter.state_dict()}
    if peer == "tga_zsr":
        state = {**head, "best_acc1": best, "optimizer": sgd_state(vision), "vision_encoder_state_dict": vision}
    else:
        state = {**head, "vision_encoder_state_dict": vision, "best_acc1": best, "optimizer": sgd_state(vision)}
    if peer in ("tecoa", "pmg_aft"):
        torch.save(state, path, pickle_module=NUMPY1_PICKLE)
    else:
        torch.save(state, path)
    return vision


def write_agft(path: Path, visual: nn.Module, *, dtype: torch.dtype) -> OrderedDict:
    """AGFT clip_model.py state_dict_train() saved by train.py line 227: {"modules": {"clip.visual":
    clip.visual.state_dict()}, "params": {}}; fp32 with --use_float, else clip.load's fp16 weights on CUDA."""
    vision = openai_visual_state(visual)
    vision = to_openai_fp16(vision) if dtype == torch.float16 else vision
    torch.save({"modules": {"clip.visual": vision}, "params": {}}, path)
    return vision


def write_image_tower(path: Path, visual: nn.Module) -> dict:
    """RobustVLM train/adversarial_training_clip.py line 239: torch.save(model.visual.state_dict()) of open_clip."""
    vision = {k: v.detach().clone() for k, v in visual.state_dict().items()}
    torch.save(vision, path)
    return vision


def write_openai_torchscript(path: Path, clip: nn.Module, *, image_size: int) -> dict[str, torch.Tensor]:
    """OpenAI's released archive: the traced CLIP with the ints input_resolution / context_length / vocab_size as
    buffers, the causal mask not in the state dict, and conv / linear / attention weights, proj and text_projection
    in fp16 (open_clip's convert_weights_to_fp16, which mirrors OpenAI's). OpenAI's archive also carries traced
    encode_image / encode_text; the loader reads only state_dict(), so tracing forward alone keeps this short.
    Returns the archive's state_dict."""
    m = copy.deepcopy(clip).eval()
    mask = m.attn_mask
    del m._buffers["attn_mask"]  # OpenAI keeps the causal mask as a plain attribute, not in the state dict
    m.attn_mask = mask
    image = torch.rand(1, 3, image_size, image_size)
    text = torch.zeros(1, m.context_length, dtype=torch.int)
    for name, value in (("input_resolution", image_size), ("context_length", m.context_length),
                        ("vocab_size", m.vocab_size)):
        if name in m.__dict__:
            delattr(m, name)
        m.register_buffer(name, torch.tensor(value))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notices
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace_module(m, {"forward": (image, text)}, check_trace=False)
    with torch.device("meta"):  # which tensors OpenAI stores in fp16, from open_clip's converter on a meta model
        reference = copy.deepcopy(clip).to_empty(device="meta")
    open_clip.model.convert_weights_to_fp16(reference)
    half = {k for k, v in reference.state_dict().items() if v.dtype == torch.float16}
    assert half, "no fp16 tensors: the converter changed"
    for name, p in traced.named_parameters():
        if name in half:
            p.data = p.data.half()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(traced, str(path))
    return {k: v.detach().clone() for k, v in traced.state_dict().items()}


def write_full(path: Path, clip: nn.Module, *, style: str) -> dict[str, torch.Tensor]:
    """A full open_clip state dict: plain torch.save, DataParallel's 'module.' prefix, open_clip's training
    checkpoint (training/main.py: {epoch, name, state_dict of the DDP model, optimizer}), or safetensors (the HF
    hub's open_clip_model.safetensors)."""
    sd = {k: v.detach().clone().contiguous() for k, v in clip.state_dict().items()}
    if style == "plain":
        torch.save(sd, path)
    elif style == "dataparallel":
        torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    elif style == "open_clip_train":
        opt = torch.optim.AdamW([nn.Parameter(torch.zeros(2))])
        torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in sd.items()},
                    "optimizer": opt.state_dict()}, path)
    else:
        save_file(sd, str(path))
    return sd


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same(loaded: dict[str, torch.Tensor], written: dict[str, torch.Tensor]) -> None:
    """Every written tensor arrived unchanged (cast to the model's float32)."""
    assert set(loaded) >= set(written)
    for k, v in written.items():
        assert loaded[k].dtype == torch.float32 and torch.equal(loaded[k], v.float()), k


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A full tiny CLIP written as open_clip safetensors (the base whose text tower image-tower files sit on)."""
    path = tmp_path_factory.mktemp("base") / "open_clip_model.safetensors"
    written = write_full(path, random_clip(TINY, 1), style="safetensors")
    return path, written


@contextlib.contextmanager
def no_model_build() -> Iterator[None]:
    """Fail if a real (non-meta) model is built inside the block: bad input must stop before any work."""
    real = open_clip.create_model

    def guarded(*args, **kwargs):
        assert kwargs.get("device") == "meta", "a model was built before the bad input was reported"
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models.open_clip, "create_model", guarded)
        yield


# ---------------------------------------------------------------- item 1: every format loads exactly


@pytest.mark.parametrize("peer", ["tecoa", "pmg_aft", "tga_zsr", "resaved_numpy2"])
def test_tecoa_family_pth_tar_loads_exactly(tmp_path, tiny_base, peer):
    base_path, base = tiny_base
    path = tmp_path / "model_best.pth.tar"
    vision = write_tecoa_family(path, random_clip(TINY, 2).visual, peer=peer)
    if peer != "tga_zsr":  # the numpy scalar is what weights_only refuses without the scoped allowlist
        with pytest.raises(pickle.UnpicklingError, match="numpy"):
            torch.load(path, weights_only=True)
    model = models.build_open_clip(TINY, pretrained=str(base_path), checkpoint=str(path))
    assert_same(model.clip.visual.state_dict(), vision)
    assert_same(model.clip.state_dict(), {k: v for k, v in base.items() if not k.startswith("visual.")})
    report = model.load_report
    assert report.files[-1]["format"] == "tecoa_family" and report.files[-1]["sha256"] == sha256(path)
    assert report.files[-1]["info.best_acc1"] == ("0" if peer == "tga_zsr" else "39.875")
    assert report.towers["image"].startswith(f"checkpoint {path}") and str(base_path) in report.towers["text"]
    assert report.quick_gelu and isinstance(model.clip.visual.transformer.resblocks[0].mlp.gelu,
                                            open_clip.transformer.QuickGELU)
    if peer != "tga_zsr":  # the allowlist was scoped to our load: a plain weights_only load still refuses it
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path, weights_only=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_agft_modules_params_dict_loads_exactly(tmp_path, tiny_base, dtype):
    path = tmp_path / "40_180_4_tiny_AGFT_ImageNet_10.pth"
    vision = write_agft(path, random_clip(TINY, 3).visual, dtype=dtype)
    assert any(v.dtype == torch.float16 for v in vision.values()) == (dtype == torch.float16)
    model = models.build_open_clip(TINY, pretrained=str(tiny_base[0]), checkpoint=str(path))
    assert_same(model.clip.visual.state_dict(), vision)
    assert model.load_report.files[-1]["format"] == "agft"


def test_bare_image_tower_and_own_finetune_checkpoint_load_exactly(tmp_path, tiny_base):
    path = tmp_path / "vitb32_fare_eps_1.pt"
    vision = write_image_tower(path, random_clip(TINY, 4).visual)
    model = models.build_open_clip(TINY, pretrained=str(tiny_base[0]), checkpoint=str(path))
    assert_same(model.clip.visual.state_dict(), vision)
    assert model.load_report.files[-1]["format"] == "image_tower"
    # this project's own engine checkpoint (nbhelpers.training._save), written by the engine's writer itself
    student = models.ClipModel(random_clip(TINY, 5), tokenizer=None, image_size=64, model_name=TINY)
    opt = torch.optim.SGD(student.visual.parameters(), lr=0.1, momentum=0.9)
    own = tmp_path / "tecoa.pt"
    training._save(own, student=student, opt=opt, step=7, cfg=FinetuneConfig(), history=[], base_fingerprint="x")
    model = models.build_open_clip(TINY, pretrained=str(tiny_base[0]), checkpoint=str(own))
    assert_same(model.clip.visual.state_dict(), student.visual.state_dict())
    assert model.load_report.files[-1]["format"] == "nbhelpers_finetune"
    assert model.load_report.files[-1]["info.step"] == "7"


@pytest.mark.parametrize("style", ["plain", "dataparallel", "open_clip_train", "safetensors"])
def test_full_open_clip_state_dicts_load_exactly(tmp_path, style):
    path = tmp_path / ("model.safetensors" if style == "safetensors" else "model.pt")
    written = write_full(path, random_clip(TINY, 6), style=style)
    model = models.build_open_clip(TINY, pretrained="none", checkpoint=str(path))
    assert_same(model.clip.state_dict(), written)
    entry = model.load_report.files[-1]
    assert (entry["format"], entry["tower"]) == ("open_clip_full", "full")
    assert entry["container"] == ("safetensors" if style == "safetensors" else "torch")
    towers = model.load_report.towers
    assert towers["text"] == towers["image"] == f"checkpoint {path} (open_clip_full)"


def test_image_tower_safetensors_loads_exactly(tmp_path, tiny_base):
    path = tmp_path / "visual.safetensors"
    vision = {k: v.detach().clone().contiguous() for k, v in random_clip(TINY, 7).visual.state_dict().items()}
    save_file(vision, str(path))
    model = models.build_open_clip(TINY, pretrained=str(tiny_base[0]), checkpoint=str(path))
    assert_same(model.clip.visual.state_dict(), vision)
    assert (model.load_report.files[-1]["format"], model.load_report.files[-1]["container"]) == ("image_tower",
                                                                                                  "safetensors")


def test_vit_b32_openai_torchscript_then_a_robustvlm_tower_on_top(tmp_path, vitb32):
    jit = tmp_path / "ViT-B-32.pt"
    written = write_openai_torchscript(jit, vitb32, image_size=224)
    assert {k for k in written if k in OPENAI_SCALARS} == set(OPENAI_SCALARS)
    assert written["visual.conv1.weight"].dtype == torch.float16
    assert written["visual.ln_pre.weight"].dtype == torch.float32
    model = models.build_open_clip("ViT-B-32", checkpoint=str(jit))
    assert_same(model.clip.state_dict(), {k: v for k, v in written.items() if k not in OPENAI_SCALARS})
    assert isinstance(model.clip.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert isinstance(model.clip.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    entry = model.load_report.files[0]
    assert (entry["format"], entry["container"], entry["sha256"]) == ("openai_torchscript", "torchscript", sha256(jit))
    assert entry["info.dropped"] == "context_length, input_resolution, vocab_size"
    assert model.load_report.notes == (f"{jit}: sha256 differs from OpenAI's published ViT-B-32.pt",)
    del model
    # RobustVLM's FARE release for ViT-B/32: the image tower alone, on top of OpenAI's archive as `pretrained`
    fare = tmp_path / "vitb32_fare_eps_1.pt"
    vision = {k: -v.detach().clone() for k, v in vitb32.visual.state_dict().items()}
    torch.save(vision, fare)
    model = models.build_open_clip("ViT-B-32", pretrained=str(jit), checkpoint=str(fare))
    assert_same(model.clip.visual.state_dict(), vision)
    assert_same(model.clip.state_dict(), {k: v for k, v in written.items()
                                          if not k.startswith("visual.") and k not in OPENAI_SCALARS})
    assert [f["role"] for f in model.load_report.files] == ["pretrained", "checkpoint"]
    assert "ViT-B-32 (QuickGELU)" in str(model.load_report) and str(fare) in str(model.load_report)
    identity = models.weights_identity("paper", pretrained=str(jit), checkpoint=str(fare))
    assert identity["weights_sha256"] == sha256(fare) and identity["base_weights_sha256"] == sha256(jit)


def test_one_entry_point_and_weights_identity(tmp_path, tiny_base):
    base_path, _ = tiny_base
    tower = tmp_path / "model_best.pth.tar"
    write_tecoa_family(tower, random_clip(TINY, 8).visual, peer="tecoa")
    model, preprocess = models.create_model_and_transforms("paper", model=TINY, pretrained=str(base_path),
                                                           checkpoint=tower)
    assert model.load_report.files[-1]["format"] == "tecoa_family" and not model.training
    identity = models.weights_identity("paper", model=TINY, pretrained=str(base_path), checkpoint=tower)
    assert identity == {"profile": "paper", "model": TINY, "pretrained": str(base_path),
                        "weights_sha256": sha256(tower), "base_weights_sha256": sha256(base_path)}
    other_base = tmp_path / "other.safetensors"
    write_full(other_base, random_clip(TINY, 9), style="safetensors")
    assert models.weights_identity("paper", model=TINY, pretrained=str(other_base),
                                   checkpoint=tower)["base_weights_sha256"] == sha256(other_base)
    # a full file: its own sha256 only (unchanged form); random weights: "none"
    assert models.weights_identity("paper", model=TINY, checkpoint=base_path) == {
        "profile": "paper", "model": TINY, "pretrained": "auto", "weights_sha256": sha256(base_path)}
    assert models.weights_identity("paper", model=TINY, pretrained="none")["weights_sha256"] == "none"
    on_random = models.weights_identity("paper", model=TINY, pretrained="none", checkpoint=tower)
    assert on_random["base_weights_sha256"] == "none"


def test_image_tower_on_random_base_warns_and_says_so(tmp_path):
    path = tmp_path / "vitb32_tecoa_eps_1.pt"
    vision = write_image_tower(path, random_clip(TINY, 10).visual)
    with pytest.warns(UserWarning, match="text tower of this .* is random"):
        model = models.build_open_clip(TINY, pretrained="none", checkpoint=str(path))
    assert_same(model.clip.visual.state_dict(), vision)
    assert model.load_report.towers["text"] == "random init (seed 0)"
    assert model.load_report.notes == ("text tower random (pretrained='none')",)
    assert model.load_report.to_dict()["files"][0]["sha256"] == sha256(path)


# ---------------------------------------------------------------- item 6: bad input stops before any work


def test_another_architecture_is_refused_naming_it(tmp_path):
    b16 = models.expected_state_shapes("ViT-B-16")  # a ViT-B-16 image tower as RobustVLM writes it (zeros)
    path = tmp_path / "vitb16_fare_eps_2.pt"
    torch.save({k[len("visual."):]: torch.zeros(s) for k, s in b16.items() if k.startswith("visual.")}, path)
    with no_model_build(), pytest.raises(CheckpointError) as err:
        models.build_open_clip("ViT-B-32", pretrained="none", checkpoint=str(path))
    msg = str(err.value)
    assert str(path) in msg and "image_tower" in msg and "ViT-B-16" in msg and "model='ViT-B-16'" in msg
    assert "conv1.weight (768, 3, 16, 16) vs (768, 3, 32, 32)" in msg


def test_a_different_width_is_refused(tmp_path):
    path = tmp_path / "wide.pt"
    torch.save({k: torch.zeros(s) for k, s in models.expected_state_shapes(TINY_WIDE).items()}, path)
    with no_model_build(), pytest.raises(CheckpointError, match=rf"{path}.*open_clip_full.*does not fit open_clip "
                                                                 rf"'{TINY}'.*model='{TINY_WIDE}'"):
        models.create_model_and_transforms("paper", model=TINY, pretrained="none", checkpoint=path)


def test_missing_and_unexpected_keys_are_named_with_the_format(tmp_path):
    path = tmp_path / "checkpoint.pth.tar"
    write_tecoa_family(path, random_clip(TINY, 11).visual, peer="tga_zsr")
    state = torch.load(path, weights_only=True)
    del state["vision_encoder_state_dict"]["ln_post.weight"]
    state["vision_encoder_state_dict"]["prompt_pos_embedding"] = torch.zeros(2, 64)  # TeCoA with prompt_len > 0
    torch.save(state, path)
    with no_model_build(), pytest.raises(CheckpointError, match=r"tecoa_family.*missing keys \['ln_post.weight'\]; "
                                                                 r"unexpected keys \['prompt_pos_embedding'\]"):
        models.build_open_clip(TINY, pretrained="none", checkpoint=str(path))


@pytest.mark.parametrize("kind", ["tecoa_family", "torchscript", "safetensors"])
def test_truncated_files_are_refused(tmp_path, tiny_base, kind):
    if kind == "tecoa_family":
        path = tmp_path / "model_best.pth.tar"
        write_tecoa_family(path, random_clip(TINY, 12).visual, peer="tecoa")
    elif kind == "torchscript":
        path = tmp_path / "ViT-B-32.pt"
        write_openai_torchscript(path, random_clip(TINY, 13), image_size=64)
    else:
        path = tmp_path / "model.safetensors"
        path.write_bytes(Path(tiny_base[0]).read_bytes())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with no_model_build(), pytest.raises(CheckpointError, match=rf"{path}.*truncated or corrupt.*download or copy "
                                                                 "the file again"):
        models.build_open_clip(TINY, pretrained="none", checkpoint=str(path))


def test_a_folder_and_an_empty_or_missing_file_are_refused(tmp_path):
    (tmp_path / "model_best.pth.tar").write_bytes(b"x")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with no_model_build():
        with pytest.raises(CheckpointError, match=rf"{tmp_path}' is a folder.*model_best.pth.tar.*pass the file "
                                                  "itself"):
            models.create_model_and_transforms("paper", model=TINY, checkpoint=tmp_path)
        with pytest.raises(CheckpointError, match=rf"{empty}' is empty"):
            models.build_open_clip(TINY, checkpoint=str(empty))
        with pytest.raises(FileNotFoundError, match="does not exist"):
            models.build_open_clip(TINY, checkpoint=str(tmp_path / "missing.pt"))
        with pytest.raises(FileNotFoundError, match="pretrained file .* does not exist"):
            models.build_open_clip(TINY, pretrained=str(tmp_path / "missing.pt"))


def test_unknown_formats_are_refused_naming_the_recognised_ones(tmp_path):
    html = tmp_path / "ViT-B-32.pt"
    html.write_bytes(b"<!DOCTYPE html><html>404</html>")
    odd = tmp_path / "odd.pt"
    torch.save({"weights": {"a": torch.zeros(2)}, "lr": 0.1}, odd)
    texty = tmp_path / "text_only.pt"
    torch.save({"token_embedding.weight": torch.zeros(3, 2)}, texty)
    with no_model_build():
        with pytest.raises(CheckpointError, match=rf"{html}.*not a weights file.*HTML error page"):
            models.build_open_clip(TINY, checkpoint=str(html))
        with pytest.raises(CheckpointError, match=rf"{odd}.*none of the recognised formats.*tecoa_family"):
            models.build_open_clip(TINY, checkpoint=str(odd))
        with pytest.raises(CheckpointError, match="none of the recognised formats"):
            models.build_open_clip(TINY, checkpoint=str(texty))


def test_python_objects_prompts_and_tower_only_bases_are_refused(tmp_path):
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"vision_encoder_state_dict": {}, "args": FinetuneConfig()}, unsafe)
    prompted = tmp_path / "vp.pth.tar"
    torch.save({"epoch": 1, "state_dict": {"module.pad_up": torch.zeros(1, 3, 30, 224)}, "add_prompter": {},
                "vision_encoder_state_dict": {"proj": torch.zeros(2, 2)}, "best_acc1": 1.0, "optimizer": {}}, prompted)
    agft_vpt = tmp_path / "agft_vpt.pth"
    torch.save({"modules": {}, "params": {"token_prompt": torch.zeros(1, 4, 768)}}, agft_vpt)
    tower = tmp_path / "tower.pt"
    write_image_tower(tower, random_clip(TINY, 14).visual)
    f32 = tmp_path / "f32.pth.tar"  # exactly the numpy type the family stores (float64) is allowed, nothing broader
    torch.save({"vision_encoder_state_dict": {"proj": torch.zeros(2)}, "best_acc1": np.float32(1.0)}, f32)
    with no_model_build():
        with pytest.raises(CheckpointError, match=rf"{unsafe}.*safe loader refuses.*FinetuneConfig.*re-save its "
                                                  "tensors"):
            models.build_open_clip(TINY, checkpoint=str(unsafe))
        with pytest.raises(CheckpointError, match=r"trained visual prompt \(\['module.pad_up'\]\)"):
            models.build_open_clip(TINY, checkpoint=str(prompted))
        with pytest.raises(CheckpointError, match=r"AGFT checkpoint of prompt parameters \['token_prompt'\]"):
            models.build_open_clip(TINY, checkpoint=str(agft_vpt))
        with pytest.raises(CheckpointError, match=rf"pretrained '{tower}' holds only an image tower"):
            models.build_open_clip(TINY, pretrained=str(tower), checkpoint=str(tower))
        with pytest.raises(CheckpointError, match=rf"{f32}.*safe loader refuses.*Float32DType"):
            models.build_open_clip(TINY, checkpoint=str(f32))


@pytest.mark.parametrize("bad", ["truncated", "empty", "random_bytes", "folder", "torch_file", "missing"])
def test_mini_profile_bad_checkpoints_name_the_file_the_problem_and_the_fix(tmp_path, bad):
    """Issue 30 item 6: the mini profile's errors match the paper profile's (file, problem, fix), before any work."""
    from nbhelpers import paths

    path = tmp_path / "mini.safetensors"
    good = paths.MINI_CHECKPOINT.read_bytes()
    problem = {"truncated": "truncated or corrupt", "empty": r"is empty \(0 bytes\)", "random_bytes":
               "not a weights file", "folder": "is a folder", "torch_file": "is a torch.save file, not the "
               "safetensors file", "missing": "does not exist"}[bad]
    if bad == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif bad == "empty":
        path.write_bytes(b"")
    elif bad == "random_bytes":
        path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                       dtype=torch.uint8).numpy().tobytes())
    elif bad == "folder":
        path = tmp_path / "ckpts"
        path.mkdir()
        (path / "mini_clip.safetensors").write_bytes(good)
    elif bad == "torch_file":
        path = tmp_path / "mini.pt"
        torch.save({"w": torch.zeros(2)}, path)
    error = FileNotFoundError if bad == "missing" else CheckpointError
    with pytest.raises(error, match=rf"mini CLIP checkpoint '{path}'.*{problem}.*Fix: "):
        models.create_model_and_transforms("mini", checkpoint=path)


def test_every_weights_read_goes_through_the_one_safe_reader():
    """Issue 30 item 3: torch.load and safetensors' readers are called in nbhelpers/checkpoints.py only."""
    import ast

    package = Path(models.__file__).parent
    readers = {"torch.load", "torch.jit.load", "load_file", "safe_open", "safetensors.torch.load_file",
               "safetensors.safe_open", "torch.serialization.load", "np.load", "numpy.load", "pickle.load",
               "pickle.loads"}
    calls = []
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in readers:
                calls.append(f"{path.name}:{node.lineno} {ast.unparse(node.func)}")
    outside = [c for c in calls if not c.startswith("checkpoints.py:")]
    assert calls and not outside, outside
