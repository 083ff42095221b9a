"""Cache keys identify content, and the IAT projection that 03 tunes is the one 04 and 05 use.

Keys of trained image towers (training.cache_key) and of tuned text projections (text_tuning.projection_key)
must change when an input file's bytes change at the same path (base checkpoint, IAT projection), when the
numerics version of the objective, engine or tuning code is bumped, and when one IAT knob changes; they must not
change when the same bytes sit at another path, nor when the code is edited without a bump (a comment: here by
pointing a module at an edited copy of its source; tests/test_numerics.py edits a copy of the whole package).
"""
from __future__ import annotations

import shutil
import types
from pathlib import Path

import pytest
import torch

from nbhelpers import attacks, losses, paths, suite, text_tuning, training, zeroshot
from nbhelpers.config import EvaluationConfig, IATConfig, IATNotebookConfig, TAINotebookConfig
from nbhelpers.models import create_model_and_transforms
from nbhelpers.zeroshot import build_class_embeddings

# Tiny IAT runs: 3 Adam steps on 64 images take well under a second on the mini CLIP.
TINY_IAT = dict(iat_steps=3, iat_images=64, device="cpu")


def _rewrite_last_byte(path: Path) -> None:
    """Change one byte of a file in place (same path, same size): only its content differs."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _edited_copy(module: types.ModuleType, tmp_path: Path) -> str:
    """A copy of module's source with one more line (a comment), for monkeypatching module.__file__."""
    copy = tmp_path / f"edited_{module.__name__.rsplit('.', 1)[-1]}.py"
    copy.write_text(Path(module.__file__).read_text() + "\n# an edit of the objective or tuning code\n")
    return str(copy)


@pytest.fixture
def checkpoint_copy(tmp_path: Path) -> Path:
    """A private copy of the committed mini CLIP weights, safe to alter."""
    path = tmp_path / "weights" / "mini_clip.safetensors"
    path.parent.mkdir()
    shutil.copyfile(paths.MINI_CHECKPOINT, path)
    return path


@pytest.fixture
def projection_file(tmp_path: Path) -> Path:
    """An IAT-style projection file (the base projection, slightly perturbed), as notebook 03 writes one."""
    model = create_model_and_transforms("mini")[0]
    with torch.no_grad():
        model.clip.text_projection.add_(0.05 * torch.randn_like(model.clip.text_projection))
    return text_tuning.save_projection(model, tmp_path / "iat" / "proj.safetensors", config={})


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache for this test: 03's saves and 04/05's look-ups land here."""
    root = tmp_path / "cache"
    monkeypatch.setattr(paths, "CACHE_DIR", root)
    return root


# ------------------------------------------------------------------------------------ training.cache_key


def test_rewritten_iat_projection_changes_the_tima_key(projection_file: Path):
    cfg = training.FinetuneConfig.from_params(method="tai", text_source="iat", iat_projection=str(projection_file))
    key = training.cache_key(cfg)
    _rewrite_last_byte(projection_file)
    assert training.cache_key(cfg) != key
    assert training.default_output(cfg) != paths.CACHE_DIR / "finetune" / f"mini-tai-{key}.pt"


def test_same_projection_bytes_at_another_path_keep_the_key(projection_file: Path, tmp_path: Path):
    moved = tmp_path / "elsewhere.safetensors"
    shutil.copyfile(projection_file, moved)
    a = training.FinetuneConfig.from_params(method="tai", text_source="iat", iat_projection=str(projection_file))
    assert training.cache_key(a) == training.cache_key(a.replace(iat_projection=str(moved)))


def test_rewritten_base_checkpoint_changes_the_training_key(checkpoint_copy: Path):
    cfg = training.FinetuneConfig.from_params(method="tecoa", checkpoint=str(checkpoint_copy))
    key = training.cache_key(cfg)
    assert key == training.cache_key(training.FinetuneConfig.from_params(method="tecoa")), \
        "the same weights bytes under another path are the same base model"
    _rewrite_last_byte(checkpoint_copy)
    assert training.cache_key(cfg) != key


@pytest.mark.parametrize("module", [training, losses, attacks, zeroshot], ids=lambda m: m.__name__)
def test_a_version_bump_changes_the_training_key_and_a_comment_does_not(module, tmp_path, monkeypatch):
    cfg = training.FinetuneConfig.from_params(method="tai")
    key = training.cache_key(cfg)
    monkeypatch.setattr(module, "__file__", _edited_copy(module, tmp_path))
    assert training.cache_key(cfg) == key
    monkeypatch.setattr(module, "NUMERICS_VERSION", module.NUMERICS_VERSION + 1)
    assert training.cache_key(cfg) != key


# ------------------------------------------------------------------------------------ text_tuning.projection_key


@pytest.mark.parametrize("knob, value", [("sc_weight", 0.0), ("iakd_weight", 0.5), ("mhe_power", 1.0),
                                         ("iat_steps", 7), ("mhe_bounded", False), ("train_seed", 1)])
def test_one_iat_knob_changes_the_projection_key(knob, value):
    cfg = IATConfig.from_params(**TINY_IAT)
    assert text_tuning.projection_key(cfg.replace(**{knob: value})) != text_tuning.projection_key(cfg)


def test_projection_key_follows_base_weights_bytes_not_their_path(checkpoint_copy: Path):
    cfg = IATConfig.from_params(checkpoint=str(checkpoint_copy))
    key = text_tuning.projection_key(cfg)
    assert key == text_tuning.projection_key(IATConfig()), "same weights bytes, another path: same projection"
    _rewrite_last_byte(checkpoint_copy)
    assert text_tuning.projection_key(cfg) != key


@pytest.mark.parametrize("module", [text_tuning, losses], ids=lambda m: m.__name__)
def test_a_version_bump_changes_the_projection_key_and_a_comment_does_not(module, tmp_path, monkeypatch):
    cfg = IATConfig()
    key = text_tuning.projection_key(cfg)
    monkeypatch.setattr(module, "__file__", _edited_copy(module, tmp_path))
    assert text_tuning.projection_key(cfg) == key
    monkeypatch.setattr(module, "NUMERICS_VERSION", module.NUMERICS_VERSION + 1)
    assert text_tuning.projection_key(cfg) != key


def test_settings_that_do_not_change_the_projection_keep_its_key():
    cfg = IATConfig()
    same = cfg.replace(device="cpu", batch_size=7, seed=3, finetune_steps=9, amp=True)
    assert text_tuning.projection_key(same) == text_tuning.projection_key(cfg)


# ------------------------------------------------------------------------------------ 03 feeds 04 and 05


def test_03_saves_where_04_and_05_look(cache_dir: Path):
    knobs = dict(sc_weight=2.0, iat_steps=11, iakd_weight=0.3, train_seed=2)
    nb03 = IATNotebookConfig.from_params(**knobs)
    saved = text_tuning.default_projection_path(nb03.iat_variants()["IAT (SC-MHE + IAKD)"])
    for runs_cfg in (TAINotebookConfig.from_params(**knobs), EvaluationConfig.from_params(**knobs)):
        assert text_tuning.default_projection_path(runs_cfg.iat_config()) == saved
    assert saved.parent == cache_dir / "iat"
    other = EvaluationConfig.from_params(**{**knobs, "sc_weight": 1.0})
    assert text_tuning.default_projection_path(other.iat_config()) != saved


def test_04_and_05_use_the_projection_03_tuned(mini_model, cache_dir, monkeypatch):
    """Notebook 03's save is found by suite.iat_projection_for (no re-tuning), and tuning there gives its bytes."""
    nb03 = IATNotebookConfig.from_params(**TINY_IAT)
    train = training.TrainData(nb03.finetune_config("tecoa"))
    iat_cfg = nb03.iat_variants()["IAT (SC-MHE + IAKD)"]
    tuned = text_tuning.tune_text(mini_model, iat_cfg, classnames=train.classnames, templates=train.templates,
                                  images=train.first_images(nb03.iat_images), progress=False)  # as 03 does
    saved = text_tuning.save_projection(tuned.model, text_tuning.default_projection_path(iat_cfg),
                                        config=iat_cfg.to_dict())
    ev = EvaluationConfig.from_params(**TINY_IAT)

    def no_tuning(*args, **kwargs):
        raise AssertionError("04/05 re-tuned the text side although 03 saved it for the same knobs")

    with monkeypatch.context() as m:
        m.setattr(text_tuning, "tune_text", no_tuning)
        assert suite.iat_projection_for(ev, mini_model, device="cpu", progress=False) == saved
    saved.unlink()  # 05 alone (03 never ran) tunes the same projection itself
    again = suite.iat_projection_for(ev, mini_model, device="cpu", progress=False)
    assert again == saved
    assert torch.equal(training.with_iat_projection(mini_model, again).clip.text_projection,
                       tuned.model.clip.text_projection)


def test_one_iat_knob_changes_timas_text_side(mini_model, cache_dir):
    """Two 05 configs differing only in sc_weight: different projections, so TIMA trains against other classes."""
    runs = {w: EvaluationConfig.from_params(**TINY_IAT, sc_weight=w, models=["tima"]) for w in (0.0, 50.0)}
    proj = {w: suite.iat_projection_for(cfg, mini_model, device="cpu", progress=False) for w, cfg in runs.items()}
    assert proj[0.0] != proj[50.0]
    tensors = {w: training.with_iat_projection(mini_model, p).clip.text_projection for w, p in proj.items()}
    assert not torch.equal(tensors[0.0], tensors[50.0])
    tima = {w: suite.finetune_configs(cfg, ["tima"], iat_path=proj[w])["tima"] for w, cfg in runs.items()}
    assert tima[0.0].iat_projection != tima[50.0].iat_projection
    assert training.cache_key(tima[0.0]) != training.cache_key(tima[50.0])
    train = training.TrainData(tima[0.0])
    emb = {w: training.class_embeddings_for(c, mini_model, train.classnames, train.templates, device="cpu")
           for w, c in tima.items()}
    original = build_class_embeddings(mini_model, train.classnames, train.templates)
    assert not torch.allclose(emb[0.0], emb[50.0], atol=1e-4)
    assert not torch.allclose(emb[0.0], original, atol=1e-4) and not torch.allclose(emb[50.0], original, atol=1e-4)
