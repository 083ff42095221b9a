"""The one benchmark command: PGD evaluation and fine-tuning-step throughput, ours against the peers' loops.

    python -m benchmarks.run_all                       # full run (about 15 min on 2 idle CPU cores)
    python -m benchmarks.run_all --quick               # mini CLIP only, PGD-3, one repeat (about a minute)
    python -m benchmarks.run_all --models vit-b-32 --classes 10,200 --batch-vit 8 --out benchmarks/cpu.md
    python -m benchmarks.run_all --gpu --device cuda --results-md benchmarks/RESULTS.md   # GPU mode (issue 20)

Prints one table per benchmark, then every ratio with its target and PASS / MISS (or 'info' without a target)
last. --out writes the same as markdown (.md) or JSON (.json), atomically. Progress bars go to stderr and are
silent under TQDM_DISABLE=1. Wall time of the README's main command: ``python -m benchmarks.time_reproduce``.

--gpu runs the GPU mode instead (``benchmarks/bench_gpu.py``: PGD-10 in fp32, bf16 and bf16 + compiled tower against
the TeCoA-family loop, matmul rates, TeCoA and TAI training steps, APGD; issue 20's targets), by default on ViT-B/32
at batch 256 and 10 and 200 classes; --results-md FILE then replaces the '## GPU' section of that file (atomically)
with this run's tables under the device's name.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks import common

DEFAULT_BATCH = {"mini": 256, "vit-b-32": 8}


def _int_list(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _name_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    for n in names:
        if n not in common.MODELS:
            raise argparse.ArgumentTypeError(f"unknown model {n!r}; choose from {','.join(common.MODELS)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="mini only, PGD-3, one repeat (a smoke run)")
    ap.add_argument("--models", type=_name_list, default=None, help="comma list of mini,vit-b-32 (default both)")
    ap.add_argument("--classes", type=_int_list, default=[10, 200], help="comma list of class counts (10,200)")
    ap.add_argument("--batch", type=int, default=None, help="batch size for every model (default: per model)")
    ap.add_argument("--batch-mini", type=int, default=DEFAULT_BATCH["mini"])
    ap.add_argument("--batch-vit", type=int, default=DEFAULT_BATCH["vit-b-32"])
    ap.add_argument("--steps", type=int, default=None, help="PGD steps of the evaluation benchmark (10)")
    ap.add_argument("--peer-steps", type=int, default=None,
                    help="time the TeCoA-family evaluation attack with this many steps and scale per step "
                         "(default: the full --steps, no scaling)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (3), median reported")
    ap.add_argument("--budget", type=float, default=10.0,
                    help="stop repeating a measurement once its timed calls took this many s (at least one call)")
    ap.add_argument("--only", choices=["pgd", "train"], default=None, help="run one of the two benchmarks")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the results to this .md or .json file")
    ap.add_argument("--gpu", action="store_true", help="the GPU mode (bench_gpu.py): fp32 / bf16 / compiled PGD-10, "
                    "matmul rates, training steps, APGD, against issue 20's targets")
    ap.add_argument("--matmul-n", type=int, default=8192, help="GPU mode: size of the timed square matmuls")
    ap.add_argument("--compile-backend", default="inductor",
                    help="GPU mode: torch.compile backend of the compiled rows ('aot_eager' for a quick smoke run)")
    ap.add_argument("--no-apgd", action="store_true", help="GPU mode: leave out the APGD row")
    ap.add_argument("--no-compile", action="store_true", help="GPU mode: leave out the compiled rows")
    ap.add_argument("--results-md", default=None,
                    help="GPU mode: replace the '## GPU' section of this markdown file (e.g. benchmarks/RESULTS.md)")
    args = ap.parse_args(argv)
    if args.results_md and not args.gpu:
        ap.error("--results-md writes the GPU section: it needs --gpu")
    if args.gpu and args.only:
        ap.error("--only selects a CPU benchmark; the GPU mode runs its own set")
    if args.models is None:
        args.models = ["vit-b-32"] if args.gpu else ["mini"] if args.quick else list(common.MODELS)
    args.steps = args.steps or (3 if args.quick else 10)
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args


def environment(device: torch.device) -> dict:
    """What the numbers depend on: versions, threads, CPU/GPU, commit, date."""
    from nbhelpers.utils import code_version

    env = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or
           platform.machine(), "cpu_count": os.cpu_count(), "device": str(device), "code_version": code_version()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def render_header(env: dict, args: argparse.Namespace, *, markdown: bool = False) -> str:
    """Title, environment and the command line."""
    bullet = "- " if markdown else ""
    return "\n".join([f"{'# ' if markdown else ''}Benchmarks ({env['date']})", "",
                      bullet + ", ".join(f"{k}={v}" for k, v in env.items()),
                      bullet + "command: python -m benchmarks.run_all " + " ".join(args.argv), ""]) + "\n"


def render_section(s: common.Section, *, markdown: bool = False, level: int = 2) -> str:
    """One benchmark's title (a markdown heading of this level), table and notes."""
    out = [("#" * level + " " if markdown else "== ") + s.title, "", common.format_table(s.rows, markdown=markdown), ""]
    out += [("- " if markdown else "  ") + n for n in s.notes]
    return "\n".join(out) + "\n"


def render_ratios(sections: list[common.Section], seconds: float, *, markdown: bool = False, level: int = 2) -> str:
    """Every ratio of every section with its target and verdict, and the tally."""
    rows = [{"ratio": r.name, "value": round(r.value, 3), "target": "-" if r.target is None else f">= {r.target:g}",
             "verdict": r.verdict, "note": r.note} for s in sections for r in s.ratios]
    verdicts = [r["verdict"] for r in rows]
    title = "Ratios (ours against the others and the targets; > 1 = ours faster / target met)"
    return "\n".join([("#" * level + " " if markdown else "== ") + title, "",
                      common.format_table(rows, markdown=markdown), "",
                      f"{verdicts.count('PASS')} PASS, {verdicts.count('MISS')} MISS, {verdicts.count('info')} info "
                      f"(no target); benchmarks took {seconds:.0f} s"]) + "\n"


def write_record(path: Path, sections: list[common.Section], env: dict, args: argparse.Namespace,
                 seconds: float) -> None:
    """Atomically write the results as markdown (.md) or JSON (anything else)."""
    from nbhelpers.utils import atomic_path

    if path.suffix == ".md":
        text = "\n".join([render_header(env, args, markdown=True),
                          *(render_section(sec, markdown=True) for sec in sections),
                          render_ratios(sections, seconds, markdown=True)])
    else:
        text = json.dumps({"environment": env, "argv": args.argv, "seconds": seconds,
                           "sections": [{"title": s.title, "rows": s.rows, "notes": s.notes,
                                         "ratios": [dict(dataclasses.asdict(r), verdict=r.verdict)
                                                    for r in s.ratios]} for s in sections]}, indent=1)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


GPU_HEADING = "## GPU"


def render_gpu_section(sections: list[common.Section], env: dict, args: argparse.Namespace, seconds: float) -> str:
    """The '## GPU' section of RESULTS.md: device name, date, command, every table and the ratios."""
    where = env.get("gpu") or f"{env['device']} (no GPU: a smoke run, not a GPU measurement)"
    head = [f"{GPU_HEADING}: {where}, {env['date'][:10]}", "",
            "Written by `python -m benchmarks.run_all --gpu ... --results-md` (issue 20's GPU mode; what it measures: "
            "`benchmarks/README.md`). Random weights and random images; times are medians of the repeats.",
            "", "- " + ", ".join(f"{k}={v}" for k, v in env.items()),
            "- command: python -m benchmarks.run_all " + " ".join(args.argv), ""]
    body = [render_section(sec, markdown=True, level=3) for sec in sections]
    return "\n".join([*head, *body, render_ratios(sections, seconds, markdown=True, level=3)])


def replace_gpu_section(path: Path, section: str) -> None:
    """Atomically replace the section of the markdown file at path whose heading starts with '## GPU' (up to the next
    '## ' heading) with section; appended at the end if the file has none."""
    from nbhelpers.utils import atomic_path

    lines = path.read_text().splitlines() if path.is_file() else []
    start = next((i for i, line in enumerate(lines) if line.startswith(GPU_HEADING)), None)
    if start is None:
        new = [*lines, "", *section.rstrip("\n").splitlines()]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = [*lines[:start], *section.rstrip("\n").splitlines(), "", *lines[end:]]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(new).rstrip("\n") + "\n")


def main_gpu(args: argparse.Namespace, device: torch.device, env: dict) -> int:
    """The GPU mode: bench_gpu per model, tables, ratios, optional --out and --results-md."""
    from benchmarks.bench_gpu import GpuSettings, bench_gpu

    t0 = time.time()
    settings = GpuSettings(steps=args.steps, repeats=args.repeats, budget_s=args.budget, seed=args.seed,
                           matmul_n=args.matmul_n, compile_backend=args.compile_backend, apgd=not args.no_apgd,
                           compile=not args.no_compile)
    sections: list[common.Section] = []
    for name in args.models:
        batch = args.batch or 256
        for sec in bench_gpu(name, args.classes, batch_size=batch, device=device, settings=settings):
            sections.append(sec)
            print(render_section(sec), flush=True)
    seconds = time.time() - t0
    print(render_ratios(sections, seconds), flush=True)
    if args.out:
        write_record(Path(args.out), sections, env, args, seconds)
        print(f"written: {args.out}")
    if args.results_md:
        replace_gpu_section(Path(args.results_md), render_gpu_section(sections, env, args, seconds))
        print(f"GPU section written: {args.results_md}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks, print tables and ratios, optionally write --out."""
    from benchmarks.bench_pgd import PgdSettings, bench_pgd
    from benchmarks.bench_train_step import bench_train_step
    from nbhelpers.utils import select_device

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    env = environment(device)
    print(render_header(env, args), flush=True)
    if args.gpu:
        return main_gpu(args, device, env)
    t0 = time.time()
    sections: list[common.Section] = []
    pgd = PgdSettings(steps=args.steps, peer_steps=args.peer_steps, repeats=args.repeats, budget_s=args.budget,
                      seed=args.seed)
    for name in args.models:
        batch = args.batch or (args.batch_mini if name == "mini" else args.batch_vit)
        if args.only in (None, "pgd"):
            sections.append(bench_pgd(name, args.classes, batch_size=batch, device=device, settings=pgd))
            print(render_section(sections[-1]), flush=True)
        if args.only in (None, "train"):
            sections.append(bench_train_step(name, args.classes, batch_size=batch, device=device,
                                             repeats=args.repeats, budget_s=args.budget, seed=args.seed))
            print(render_section(sections[-1]), flush=True)
    seconds = time.time() - t0
    print(render_ratios(sections, seconds), flush=True)
    if args.out:
        write_record(Path(args.out), sections, env, args, seconds)
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
