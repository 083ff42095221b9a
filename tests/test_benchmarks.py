"""The benchmark command runs end to end (a smoke run; speed is reported by `make benchmark`, never asserted here)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_prints_ratios_and_writes_its_record(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run_all", "--quick", "--classes", "10", "--out", str(out)],
                          cwd=ROOT, env=dict(os.environ, TQDM_DISABLE="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tail = proc.stdout[proc.stdout.rindex("ratio"):]
    assert "ours / TeCoA-family loop" in tail and "ours / torchattacks PGD" in tail  # ratios come last
    record = json.loads(out.read_text())
    assert record and not list(tmp_path.glob("*.tmp*"))
