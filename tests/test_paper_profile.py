"""The paper profile end to end: all six notebooks with profile="paper", open_clip ViT-B-32 on random weights
(pretrained="none"), on a tiny data root written here in torchvision's real on-disk layouts.

The data root (tests/paper_fixtures.py) holds CIFAR-10 as pickled batches in cifar-10-batches-py/, TinyImageNet as
64 px JPEG class folders (train/ and val/, the fine-tuning set) and EuroSAT as 2750/<Class>/*.jpg. Nothing is
downloaded; the loaders read the files with torchvision exactly as on a real run (TIMA_SKIP_CHECKSUMS=1 only
replaces CIFAR's md5 comparison with the official archives by an existence check). The notebooks run in order and
share one cache folder, as 03 -> 04 -> 05 do on a real run: 03 tunes the IAT projection and trains TeCoA, 04
measures the margin offset and trains TAI and TIMA, 05 finds every model in the cache and runs the evaluation grid.

01 and 02 run through the papermill CLI with exactly
``-p profile paper -p model ViT-B-32 -p pretrained none -p data_root DIR -p dataset cifar10``, plus parameters that
only make the run smaller (n_samples, pgd_steps, and for 01 eps_list): ViT-B-32 at 224 px costs about a second per
image and PGD step on 2 CPU cores. 00, 03, 04 and 05 run under nbval as in tests/test_notebooks.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest
import torch

from nbhelpers import data, models, notebook, training
from nbhelpers.config import EvaluationConfig, FinetuneConfig, MarginOffsetConfig
from nbhelpers.notebook import RANDOM_WEIGHTS_MESSAGE
from nbhelpers.paper_data import SKIP_CHECKSUMS_ENV
from nbhelpers.results import meta_path
from nbhelpers.zeroshot import model_fingerprint
from paper_fixtures import write_paper_root

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BACKBONE = {"profile": "paper", "model": "ViT-B-32", "pretrained": "none", "device": "cpu", "batch_size": 8}
# The knobs 03, 04 and 05 share must be equal, so that 04 and 05 find 03's and 04's runs in the cache.
FINETUNE = {"finetune_steps": 2, "train_batch_size": 2, "warmup_steps": 1, "train_pgd_steps": 1, "iat_steps": 2,
            "iat_images": 2, "eps": 4.0, "pgd_steps": 1}
NBVAL_PARAMETERS = {
    "00_mini_world": {"datasets": ["cifar10", "eurosat"], "n_samples": 2, "eps_list": [0.0, 4.0], "pgd_steps": 1,
                      "n_gallery": 2},
    "03_iat": {**FINETUNE, "datasets": ["cifar10"], "n_samples": 2},
    "04_tai": {**FINETUNE, "configs": "knobs", "datasets": ["cifar10"], "n_samples": 2, "eval_eps_list": [4.0],
               "baselines": ["tecoa"], "with_prompts": False},
    "05_evaluation": {**FINETUNE, "configs": "knobs", "models": ["zero_shot", "tecoa", "tai", "tima"],
                      "datasets": ["cifar10"],
                      "include_finetune_set": False, "eps_list": [1.0, 4.0], "attacks": ["pgd10"], "strong_attacks": [],
                      "n_strong_datasets": 1, "n_samples": 1, "n_strong": 1, "analysis_n": 2},
}
# The command for 01 and 02, verbatim, then size-only parameters (a CPU cannot afford the defaults).
EXACT = ["-p", "profile", "paper", "-p", "model", "ViT-B-32", "-p", "pretrained", "none", "-p", "data_root", "{DIR}",
         "-p", "dataset", "cifar10"]
SIZE_ONLY = {"01_margin_offset": ["-p", "n_samples", "4", "-p", "pgd_steps", "1", "-y", "eps_list: [1.0, 4.0]"],
             "02_margin_vs_similarity": ["-p", "n_samples", "4", "-p", "pgd_steps", "1"]}
ORDER = ["00_mini_world", "01_margin_offset", "02_margin_vs_similarity", "03_iat", "04_tai", "05_evaluation"]


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny data root in the real layouts and one set of output/cache folders shared by the six notebooks."""
    base = tmp_path_factory.mktemp("paper")
    data_root = write_paper_root(base / "data", cifar_test=40, cifar_classes=10, tiny_classes=2,
                                 tiny_train_per_class=1, tiny_val_per_class=1)
    env = dict(os.environ, TIMA_FIGURES_DIR=str(base / "figures"), TIMA_RESULTS_DIR=str(base / "results"),
               TIMA_CACHE_DIR=str(base / "cache"), TQDM_DISABLE="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg",
               **{SKIP_CHECKSUMS_ENV: "1"})
    return {"base": base, "data_root": data_root, "env": env}


def _outputs_text(path: Path) -> str:
    """Every stream and text output of an executed notebook, joined."""
    nb = nbformat.read(path, as_version=4)
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or "".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def _run_nbval(stem: str, run: dict) -> None:
    base = run["base"]
    prepared = base / f"{stem}.ipynb"
    params = {**BACKBONE, "data_root": str(run["data_root"]), **NBVAL_PARAMETERS[stem]}
    pm.execute_notebook(str(NOTEBOOKS / f"{stem}.ipynb"), str(prepared), parameters=params, prepare_only=True,
                        kernel_name="python3")
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
                           "--nbval-cell-timeout=600", str(prepared)], cwd=base, env=run["env"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]


def _run_cli(stem: str, run: dict) -> str:
    base = run["base"]
    out = base / f"{stem}.out.ipynb"
    args = [a.replace("{DIR}", str(run["data_root"])) for a in EXACT] + SIZE_ONLY[stem]
    proc = subprocess.run([sys.executable, "-m", "papermill", f"{stem}.ipynb", str(out), *args, "--kernel",
                           "python3"], cwd=NOTEBOOKS, env=run["env"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-8000:]
    return _outputs_text(out)


def _table(run: dict, name: str) -> pd.DataFrame:
    return pd.read_csv(run["base"] / "results" / f"{name}.csv")


@pytest.mark.parametrize("stem", ORDER)
def test_notebook_runs_on_the_paper_profile(stem: str, paper_run: dict) -> None:
    """Each notebook runs to its end on the paper path and writes its figures and tables with paper provenance."""
    if stem in SIZE_ONLY:
        text = _run_cli(stem, paper_run)
        assert RANDOM_WEIGHTS_MESSAGE in text, "random weights must be announced in the notebook"
        assert "ViT-B-32" in text and "cifar10" in text
    else:
        _run_nbval(stem, paper_run)
    prefix = stem[:2]
    figures = list((paper_run["base"] / "figures").glob(f"{prefix}_*.png"))
    tables = list((paper_run["base"] / "results").glob(f"{prefix}_*.csv"))
    assert figures and tables, "a notebook must write its figures and results"
    for table in tables:
        meta = json.loads(meta_path(table).read_text())
        config = meta["config"]
        assert (config["profile"], config["model"], config["pretrained"]) == ("paper", "ViT-B-32", "none"), table
        assert meta["base_model"].startswith("ViT-B-32"), table


def test_paper_results_cover_the_written_datasets(paper_run: dict) -> None:
    """What the notebooks measured is on the fixture's datasets and sizes (runs after the six notebooks)."""
    results = paper_run["base"] / "results"
    if not (results / "05_evaluation.jsonl").is_file():
        pytest.skip("needs the six notebook runs of this module")
    robustness = _table(paper_run, "00_mini_clip_robustness")
    assert set(robustness.task) == {"cifar10", "eurosat"} and set(robustness.eps) == {0.0, 4.0}
    assert (robustness.chance == 1 / 10).sum() == 2 and (robustness.chance == 1 / 2).sum() == 2
    accuracy = _table(paper_run, "01_robust_accuracy")
    assert sorted(accuracy.eps) == [0.0, 1.0, 4.0]
    pairs = _table(paper_run, "02_pair_margins")
    assert 0 < len(pairs) <= 4 * 9  # 4 images of 4 classes, against the 9 other classes
    rows = pd.read_json(results / "05_evaluation.jsonl", lines=True)
    assert set(rows.model) == {"zero_shot", "tecoa", "tai", "tima"} and set(rows.dataset) == {"cifar10"}
    assert set(rows.attack) == {"clean", "pgd10"} and set(rows.eps) == {0.0, 1.0, 4.0}
    assert len(rows) == 4 * 3 and (rows.profile == "paper").all()  # 4 models x (clean, PGD-10 at 1 and 4/255)
    # 05 found every fine-tuned model in the cache that 03 and 04 filled (nothing trained twice).
    cached = sorted(p.name.split("-")[1] for p in (paper_run["base"] / "cache" / "finetune").glob("*.pt"))
    assert cached == ["tai", "tai", "tecoa"]  # TAI and TIMA (TAI on IAT text), and TeCoA


# ------------------------------------------------------------------ the pieces of the paper path, without notebooks


@pytest.fixture(scope="module")
def vit_b32() -> tuple:
    """ViT-B-32 with random weights and its preprocess (CPU)."""
    return models.create_model_and_transforms("paper", model="ViT-B-32", pretrained="none")


def test_random_init_is_the_same_in_every_process_and_ignores_the_global_rng(vit_b32: tuple) -> None:
    """pretrained='none' weights are seeded: a run cached under "none" is found again by a later process."""
    torch.manual_seed(123)
    again, _ = models.create_model_and_transforms("paper", model="ViT-B-32", pretrained="none")
    assert model_fingerprint(again) == model_fingerprint(vit_b32[0])
    assert models.weights_identity("paper", model="ViT-B-32", pretrained="none")["weights_sha256"] == "none"


def test_paper_eval_set_reads_the_fixture_through_the_preprocess(paper_run: dict, vit_b32: tuple,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SKIP_CHECKSUMS_ENV, "1")
    model, preprocess = vit_b32
    ev = data.load_eval_set("paper", "cifar10", n=3, data_root=paper_run["data_root"], preprocess=preprocess)
    # TeCoA's protocol (the default): CIFAR at its native 32 px, resized inside the model
    assert ev.images.shape == (3, 3, 32, 32) and ev.sampling == "random+partial" and ev.protocol == "tecoa"
    assert ev.labels.tolist() == [i % 10 for i in ev.indices]  # the fixture's test image i has label i % 10
    assert 0 <= float(ev.images.min()) and float(ev.images.max()) <= 1
    assert ev.classnames[:2] == ["airplane", "automobile"] and ev.templates == ["This is a photo of a {}"]
    default = data.load_eval_set("paper", "cifar10", n=3, data_root=paper_run["data_root"])  # the default protocol
    torch.testing.assert_close(default.images, ev.images)
    clip = data.load_eval_set("paper", "cifar10", n=3, data_root=paper_run["data_root"],
                              preprocess=models.ProtocolPreprocess("clip"))
    assert clip.images.shape == (3, 3, 224, 224) and clip.protocol == "clip" and clip.indices == ev.indices
    custom = data.load_eval_set("paper", "cifar10", n=3, data_root=paper_run["data_root"],
                                preprocess=models.paper_preprocess())
    assert custom.protocol == "custom" and custom.images.shape == (3, 3, 224, 224)
    with pytest.raises(TypeError, match="pass the model's preprocess"):
        data.load_eval_set("paper", "eurosat", n=2, data_root=paper_run["data_root"], preprocess=lambda im: im)


def test_paper_train_data_needs_a_preprocess_and_samples_across_classes(tmp_path: Path, vit_b32: tuple) -> None:
    """ImageFolder sorts by class: TrainData.first(n) (IAT images, margin offset) is a seeded sample, not the head."""
    root = write_paper_root(tmp_path, cifar_test=2, tiny_classes=3, tiny_train_per_class=4)
    cfg = FinetuneConfig.from_params(profile="paper", model="ViT-B-32", pretrained="none", data_root=str(root),
                                     method="tecoa")
    with pytest.raises(ValueError, match="needs the model's preprocess"):
        training.TrainData(cfg)
    train = training.TrainData(cfg, preprocess=vit_b32[1])
    images, labels = train.first(3)
    assert images.shape == (3, 3, 224, 224) and len(set(labels.tolist())) > 1  # the folder's head is all class 0
    again = training.TrainData(cfg, preprocess=vit_b32[1]).first(3)
    assert torch.equal(again[1], labels) and torch.equal(again[0], images)
    assert train.classnames == ["goldfish", "great white shark", "tiger shark"]
    x, y = train.batch(0, 4)
    assert x.shape == (4, 3, 224, 224) and y.shape == (4,)
    with pytest.raises(ValueError, match=r"train_batch_size must be in \[1, 12\]"):
        train.batch(0, 13)


def test_setup_checks_the_data_root_and_announces_random_weights(paper_run: dict,
                                                                  capsys: pytest.CaptureFixture) -> None:
    cfg = MarginOffsetConfig.from_params(profile="paper", pretrained="none", dataset="stl10", device="cpu",
                                         data_root=str(paper_run["data_root"]))
    with pytest.raises(FileNotFoundError, match=r"stl10_binary(.|\n)*Present there: \['cifar10', 'eurosat', "
                                                r"'tinyimagenet'\]"):
        notebook.setup(cfg)
    ok = cfg.replace(dataset="cifar10")
    with pytest.warns(notebook.RandomWeightsWarning, match="RANDOM WEIGHTS"):
        notebook.setup(ok)
    assert RANDOM_WEIGHTS_MESSAGE in capsys.readouterr().out
    # 05 reads the fine-tuning set's train split (training, IAT) and, with include_finetune_set, its val split.
    needs = notebook.required_datasets(EvaluationConfig.from_params(profile="paper", datasets=["cifar10"],
                                                                    configs="knobs"))
    assert needs == [("cifar10", None), ("tinyimagenet", None), ("tinyimagenet", "train")]


@pytest.mark.parametrize("method", ["onehot_at", "coadv", "tecoa_partial"])
def test_tecoas_baselines_train_on_the_paper_code_path(method: str, tmp_path: Path) -> None:
    """TeCoA's motivating baselines on random ViT-B/32 weights and a TinyImageNet fixture: one step moves the image
    tower (partial fine-tuning: only its last partial_last_n tensors) and never the text side."""
    root = write_paper_root(tmp_path, cifar_test=2, tiny_classes=2, tiny_train_per_class=1)
    cfg = FinetuneConfig.from_params(profile="paper", model="ViT-B-32", pretrained="none", data_root=str(root),
                                     method=method, finetune_steps=1, train_batch_size=2, warmup_steps=1,
                                     finetune_lr=1e-3, train_pgd_steps=1, partial_last_n=3, checkpoint_every=10)
    run = training.finetune(cfg, out=tmp_path / f"{method}.pt", progress=False)
    base, _ = models.create_model_and_transforms(**cfg.model_spec())
    changed = [not torch.equal(a, b) for a, b in zip(run.model.visual.parameters(), base.visual.parameters())]
    assert any(changed) and (not any(changed[:-3]) if method == "tecoa_partial" else True)
    assert all(torch.equal(a, b) for a, b in zip(run.model.clip.transformer.parameters(),
                                                 base.clip.transformer.parameters()))


def test_a_native_resolution_train_task_trains_as_tecoa_does(tmp_path, monkeypatch):
    """Issue 30 item 5: CIFAR-10 as train_task under tecoa is read at 32 px (TeCoA's finetuning.py `preprocess`,
    ToTensor) and resized bicubically inside the model; under tga_zsr at 224 px; a step trains the tower."""
    from paper_fixtures import write_paper_root

    from nbhelpers import models, training
    from nbhelpers.config import FinetuneConfig

    monkeypatch.setenv("TIMA_SKIP_CHECKSUMS", "1")  # the fixture's bytes are not the official archive's
    root = write_paper_root(tmp_path, cifar_test=2)
    spec = dict(profile="paper", model="ViT-B-32", pretrained="none", data_root=str(root), train_task="cifar10",
                method="tecoa", finetune_steps=1, train_batch_size=2, warmup_steps=0, finetune_lr=1e-3,
                train_pgd_steps=1, checkpoint_every=10)
    sizes = {}
    for protocol in ("tecoa", "tga_zsr"):
        cfg = FinetuneConfig.from_params(**spec, protocol=protocol)
        data = training.TrainData(cfg, preprocess=models.ProtocolPreprocess(protocol))
        sizes[protocol] = tuple(data.first(2)[0].shape[-2:])
    assert sizes == {"tecoa": (32, 32), "tga_zsr": (224, 224)}
    cfg = FinetuneConfig.from_params(**spec, protocol="tecoa")
    run = training.finetune(cfg, out=tmp_path / "cifar.pt", progress=False)
    base = models.create_model_and_transforms(**cfg.model_spec())[0]
    assert any(not torch.equal(a, b) for a, b in zip(run.model.visual.parameters(), base.visual.parameters()))
