"""Training input decoded in worker processes (``decode_workers``): the same tensors in the same order as in this
process, so ``TrainData.batch(step)`` stays a pure function of (seed, step); and the pipeline benchmark runs."""
from __future__ import annotations

import json
import os

import torch

from benchmarks import bench_input
from nbhelpers import models, training
from nbhelpers.config import FinetuneConfig
from nbhelpers.paper_data import SKIP_CHECKSUMS_ENV
from paper_fixtures import write_paper_root


def test_worker_decoding_gives_the_same_batches_in_the_same_order(tmp_path, monkeypatch):
    monkeypatch.setenv(SKIP_CHECKSUMS_ENV, "1")
    root = write_paper_root(tmp_path / "data", cifar_test=2, tiny_classes=2, tiny_train_per_class=5,
                            tiny_val_per_class=1)
    cfg = FinetuneConfig(profile="paper", pretrained="none", data_root=str(root), train_batch_size=4)
    pre = models.ProtocolPreprocess("tecoa", image_size=32)
    here = training.TrainData(cfg, preprocess=pre)
    pooled = training.TrainData(cfg.replace(decode_workers=2), preprocess=pre)
    assert (here.decode_workers, pooled.decode_workers) == (0, 2)
    try:
        for step in (0, 1, 3):
            (xa, ya), (xb, yb) = here.batch(step, 4), pooled.batch(step, 4)
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(here.first(6)[0], pooled.first(6)[0])
    finally:
        pooled.close()
    assert pooled._pool is None
    assert training.cache_key(cfg) == training.cache_key(cfg.replace(decode_workers=2))  # speed only


def test_pipeline_benchmark_prints_images_per_second_per_core(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(SKIP_CHECKSUMS_ENV, raising=False)
    out = tmp_path / "rows.json"
    assert bench_input.main(["--images", "8", "--classes", "2", "--size", "80", "60", "--batch", "4", "--steps", "1",
                             "--workers", "0", "--folder", str(tmp_path / "jpegs"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "images/s" in text and "per core" in text
    (row,) = json.loads(out.read_text())
    assert row["workers"] == 0 and row["images_per_s"] > 0 and row["image_shape"] == [3, 224, 224]
    assert len(list((tmp_path / "jpegs" / "tinyimagenet" / "train").rglob("*.JPEG"))) == 8
    assert SKIP_CHECKSUMS_ENV not in os.environ  # allowed while it ran only: later tests keep their md5 checks
