"""Wall time of the README's main command (`make reproduce`) in a fresh clone of this repository.

    python -m benchmarks.time_reproduce                          # git clone HEAD to a temp dir, `make reproduce`
    python -m benchmarks.time_reproduce --python .venv/bin/python  # reuse an environment: skips make's venv set-up
    python -m benchmarks.time_reproduce --out benchmarks/reproduce_time.json

A fresh clone has an empty cache/, so this is the first-run time (every fine-tuning included). The clone is of the
committed HEAD: uncommitted changes are not in it (a warning says so). With --python, the clone runs
`<python> scripts/run_notebooks.py` with PYTHONPATH set to the clone, so its own nbhelpers is imported even if that
environment has another checkout installed in editable mode. Takes about 15 minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fresh_clone(dest: Path) -> str:
    """git clone this repository's HEAD into dest; returns the commit id."""
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(dest)], check=True)
    return subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    """Clone, run the main command, print (and optionally write) its wall time in seconds."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.time_reproduce", description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=None,
                    help="existing interpreter to run scripts/run_notebooks.py with (default: `make reproduce`, "
                         "which creates the clone's own .venv first and counts that time too)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone (its path is printed)")
    ap.add_argument("--out", default=None, help="write {seconds, command, commit, ...} as JSON here")
    args = ap.parse_args(argv)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        print("warning: uncommitted changes are not part of the clone that is timed", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="tima-reproduce-"))
    clone = tmp / "repo"
    commit = fresh_clone(clone)
    env = dict(os.environ, TQDM_DISABLE="1")
    if args.python:
        command = [args.python, "scripts/run_notebooks.py"]
        env["PYTHONPATH"] = os.pathsep.join([str(clone), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    else:
        command = ["make", "reproduce"]
    print(f"timing `{' '.join(command)}` in {clone} (commit {commit[:12]})", flush=True)
    t0 = time.perf_counter()
    result = subprocess.run(command, cwd=clone, env=env)
    seconds = time.perf_counter() - t0
    print(f"`{' '.join(command)}`: exit {result.returncode}, wall time {seconds:.0f} s ({seconds / 60:.1f} min)")
    if args.out:
        from nbhelpers.utils import atomic_path

        record = {"seconds": round(seconds, 1), "command": command, "commit": commit, "returncode": result.returncode,
                  "python": args.python, "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with atomic_path(args.out) as path:
            path.write_text(json.dumps(record, indent=1))
    if args.keep:
        print(f"clone kept at {clone}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
