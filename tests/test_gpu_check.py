"""The prepared GPU check (scripts/gpu_check.sh, issue 20) runs at its tiny size on a CPU: every stage of the paper
profile's helper calls and the GPU mode of the benchmark, so the script is known to work before a GPU runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_at_tiny_size(tmp_path):
    out = tmp_path / "check"
    env = dict(os.environ, TQDM_DISABLE="1", PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "tiny", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    record = json.loads((out / "gpu_check.json").read_text())
    stages = record["stages"]
    assert record["size"] == "tiny" and len(stages) == 11 and record["complete"] is True
    pipeline = next(v for k, v in stages.items() if k.startswith("training input pipeline"))
    assert set(pipeline["images_per_s_per_core"]) == {"0", "2"} and pipeline["images_per_s"]["2"] > 0
    assert stages["data root (real layouts)"]["files"] > 10
    zero_shot = next(v for k, v in stages.items() if k.startswith("00/05"))
    assert zero_shot["cells"] == 6 and set(zero_shot["accuracy"]) >= {"zero_shot/eurosat/clean@0"}
    for name in ("tecoa", "tai", "tima"):
        run = next(v for k, v in stages.items() if k.startswith(f"04 fine-tuning {name} "))
        assert run["steps"] == 1 and run["first_loss"] > 0
    bench = json.loads((out / "bench_gpu.json").read_text())
    titles = [s["title"] for s in bench["sections"]]
    assert any(t.startswith("matmul rate") for t in titles) and any("training step" in t for t in titles)
    ratios = [r["name"] for s in bench["sections"] for r in s["ratios"]]
    assert any("/ TeCoA-family loop" in r for r in ratios) and any("epoch of 100,000" in r for r in ratios)
    pgd = next(s for s in bench["sections"] if s["title"].startswith("PGD-"))
    row = pgd["rows"][0]
    assert {"min_s", "median_s", "gpu_only_median_s", "tflop_per_s", "of_bf16_matmul"} <= set(row)
    assert any(r["method"] == "ours, bf16, counter start" for r in pgd["rows"])
    assert "[gpu_check] done" in proc.stdout
    assert not list(ROOT.glob("benchmarks/*.tmp*"))  # the tiny run never writes the repository's RESULTS.md


def test_gpu_section_replaces_only_itself(tmp_path):
    from benchmarks.run_all import replace_gpu_section

    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nintro\n\n## GPU\n\nold text\n\n## CPU: 2 cores\n\ncpu table\n")
    replace_gpu_section(path, "## GPU: NVIDIA H200, 2026-12-01\n\nnew table\n")
    text = path.read_text()
    assert "old text" not in text and "new table" in text and "cpu table" in text and "intro" in text
    assert text.index("## GPU: NVIDIA H200") < text.index("## CPU: 2 cores")
    replace_gpu_section(path, "## GPU: NVIDIA H100, 2026-12-02\n\nnewer\n")
    assert path.read_text().count("## GPU") == 1 and "newer" in path.read_text()
