"""Every command README.md and docs/*.md print works as printed, and every command line explains itself.

The shell commands of the fenced code blocks (python, .venv/bin/python, papermill, torchrun, make; ``\\``
continuations joined, ``cd DIR &&`` prefixes and shell variables of the same block resolved) are checked without
doing any work: a CLI's flags go through that CLI's own parser (``build_parser``), the training CLI's also through
its config; a papermill command's parameters through papermill's own parser and types, then the notebook's
parameters cell and config (the paper profile too: no data is read); ``scripts/run_notebooks.py`` through its
``--dry-run``; a make target must be in the Makefile. A doc that drifts from the code fails here.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import re
import shlex
import sys
from pathlib import Path

import papermill.cli
import pytest

from nbhelpers import config, methods, study_runs, training
from script_modules import load_script

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^[ \t]*```[ \t]*(bash|sh|shell|console)?[ \t]*\n(.*?)^[ \t]*```", re.S | re.M)
STARTS = ("python", ".venv/bin/python", "../.venv/bin/python", "papermill", ".venv/bin/papermill",
          "../.venv/bin/papermill", "make", "torchrun")
EXTERNAL_MODULES = {"venv", "pip"}  # python -m of other tools (set-up), not ours to check
ASSIGNMENT = re.compile(r"^([A-Z_][A-Z0-9_]*)=(.*)$", re.S)


# ---------------------------------------------------------------------------------------------- extraction
def _logical_lines(text: str) -> list[str]:
    """The block's lines, a quoted string that spans lines (A="... newline ...") joined into one."""
    out: list[str] = []
    for line in text.splitlines():
        if out and out[-1].endswith("\x00"):
            out[-1] = out[-1][:-1] + " " + line.strip()
        else:
            out.append(line)
        try:
            shlex.split(out[-1], comments=True)
        except ValueError:  # no closing quotation yet
            out[-1] += "\x00"
    return out


def extract_commands(markdown: str) -> list[tuple[str, list[str]]]:
    """(cwd, argv) of each command of markdown's fenced shell blocks; cwd is '' or the folder a `cd X &&` enters."""
    out = []
    variables: dict[str, str] = {}  # a document's blocks are one shell session: a variable set above is known below
    for match in FENCE.finditer(markdown):
        text = re.sub(r"\\\n\s*", " ", match.group(2))  # join continuations
        if match.group(1) == "console":  # a transcript: only the prompt lines are commands, the rest is output
            text = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("$ "))
        for line in _logical_lines(text):
            line = line.strip().removeprefix("$ ")
            if (assigned := ASSIGNMENT.match(line)) is not None:
                variables[assigned.group(1)] = " ".join(shlex.split(assigned.group(2), comments=True))
                continue
            for name, value in variables.items():
                line = re.sub(rf"\${{?{name}\b}}?", value, line)
            cwd = ""
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words[:1] == ["cd"] and len(words) == 2:
                    cwd = words[1]
                elif words and words[0].startswith(STARTS):
                    out.append((cwd, words))
    return out


# ---------------------------------------------------------------------------------------------- checking
_script = functools.cache(load_script)  # each script imported once per session


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parser.parse_args(argv); a refusal is a ValueError carrying argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv)
    except SystemExit as exc:
        raise ValueError(err.getvalue().strip().splitlines()[-1] if err.getvalue() else f"exit {exc.code}") from exc


def _check_module(module: str, argv: list[str]) -> None:
    """Flags of `python -m <module> argv` through that CLI's parser (and the training CLI's config)."""
    if module in EXTERNAL_MODULES:
        return
    if not module.startswith("nbhelpers."):
        raise ValueError(f"python -m {module}: not a command line of this project")
    mod = importlib.import_module(module)
    if not hasattr(mod, "build_parser"):
        raise ValueError(f"python -m {module}: the module has no command line (build_parser)")
    args = vars(_parse(mod.build_parser(), argv))
    if module == "nbhelpers.training":  # its flags are FinetuneConfig's fields, validated before any work
        args.pop("out")
        cfg = config.FinetuneConfig.from_params(**{**config.FinetuneConfig.defaults(), **args})
        if methods.get(cfg.method).needs_offset and "margin_offset" not in args:  # 0.0 would train uncalibrated
            raise ValueError(f"--method {cfg.method} needs the measured --margin_offset (cosine units; "
                             "python -m nbhelpers.suite prints it)")


def _check_python(argv: list[str]) -> None:
    """A python command: `-m module ...` or `scripts/name.py ...`."""
    if argv[:1] == ["-m"]:
        return _check_module(argv[1], argv[2:])
    script = Path(argv[0])
    if script.parent.name != "scripts" or not (ROOT / "scripts" / script.name).is_file():
        raise ValueError(f"python {argv[0]}: not a script of this project (scripts/*.py)")
    if script.stem == "run_notebooks":
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = _script("run_notebooks").main([*argv[1:], "--dry-run"])
        if code != 0:
            raise ValueError(err.getvalue().strip())
        return None
    _parse(_script(script.stem).build_parser(), argv[1:])
    return None


def _check_papermill(cwd: str, argv: list[str]) -> None:
    """papermill IN OUT -p name value ...: papermill's own parser and types, then the notebook's parameters."""
    ctx = papermill.cli.papermill.make_context("papermill", list(argv), resilient_parsing=False)
    notebook = (ROOT / cwd / ctx.params["notebook_path"]).resolve()
    if notebook.parent != ROOT / "notebooks" or not notebook.is_file():
        raise ValueError(f"papermill: no notebook {ctx.params['notebook_path']} (from {cwd or 'the root'})")
    params = {name: papermill.cli._resolve_type(value) for name, value in ctx.params["parameters"]}
    runner = _script("run_notebooks")
    problems = runner.unknown_parameters([notebook], params) or runner.parameter_problems([notebook], params)
    if problems:
        raise ValueError("; ".join(problems))


def make_targets() -> set[str]:
    """The Makefile's targets."""
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), flags=re.M))


def check_command(cwd: str, argv: list[str]) -> None:
    """Raise ValueError (or ConfigError) if the command would be refused; do no work."""
    head = Path(argv[0]).name
    if head == "make":
        missing = [t for t in argv[1:] if not t.startswith("-") and "=" not in t and t not in make_targets()]
        if missing:
            raise ValueError(f"make: no target {missing} in the Makefile")
    elif head == "torchrun":  # torchrun's own options come before -m
        if "-m" not in argv:
            raise ValueError("torchrun: expected -m nbhelpers.<module>")
        i = argv.index("-m")
        _check_module(argv[i + 1], argv[i + 2:])
    elif head == "papermill":
        _check_papermill(cwd, argv[1:])
    elif head.startswith("python"):
        _check_python(argv[1:])
    else:
        raise ValueError(f"no check for {argv[0]}")


def doc_commands() -> list[tuple[str, str, list[str]]]:
    """(document, cwd, argv) of every command the README and docs/ print."""
    return [(doc.relative_to(ROOT).as_posix(), cwd, argv) for doc in DOCS
            for cwd, argv in extract_commands(doc.read_text())]


def failures(commands: list[tuple[str, str, list[str]]]) -> list[str]:
    """'doc: command: why' for each command that would be refused."""
    out = []
    for doc, cwd, argv in commands:
        try:
            check_command(cwd, argv)
        except (ValueError, config.ConfigError) as err:
            out.append(f"{doc}: {shlex.join(argv)}\n    -> {err}")
    return out


# ---------------------------------------------------------------------------------------------- tests
def test_every_printed_command_works_as_printed():
    commands = doc_commands()
    kinds = {k: sum(Path(a[0]).name.startswith(k) for _, _, a in commands) for k in ("python", "papermill", "torchrun",
                                                                                       "make")}
    with contextlib.suppress(Exception):
        sys.__stdout__.write(f"\n[doc commands] checked {len(commands)} commands from {len(DOCS)} files: {kinds}\n")
    assert len(commands) >= 20 and all(kinds.values()), kinds  # the extraction finds the docs' commands
    bad = failures(commands)
    assert not bad, "commands printed in the docs that fail:\n" + "\n".join(bad)


def test_docs_show_tima_from_the_command_line():
    """IAT text first, then TAI on it with the measured margin offset (cosine units, --margin_offset)."""
    commands = [argv for doc, _, argv in doc_commands() if doc == "docs/COMMAND_LINE.md"]
    tima = [a for a in commands if "nbhelpers.training" in a and "--text_source" in a
            and a[a.index("--text_source") + 1] == "iat"]
    assert tima and all("--margin_offset" in a and "--iat_projection" in a and "--method" in a
                        and a[a.index("--method") + 1] == "tai" for a in tima)


SYNTHETIC = """
Some prose.

```bash
.venv/bin/python -m nbhelpers.training --method tecoa --finetune_lr 1e-3 --no_such_flag 3   # a drifted flag
python -m nbhelpers.training --method foo --finetune_lr 1e-3
torchrun --nproc_per_node 2 -m nbhelpers.training --method tai --finetune_lr 1e-3 --margin_offset -0.2
OPTS="--profile mini --stages validation"
python -m nbhelpers.study_runs $OPTS --status
cd notebooks && ../.venv/bin/papermill 01_margin_offset.ipynb out.ipynb -p eps 8 \\
    -p no_such_parameter 1
papermill notebooks/05_evaluation.ipynb out.ipynb -p profile paper -p data_root /data
papermill notebooks/05_evaluation.ipynb out.ipynb -p profile paper -p configs knobs -p finetune_lr 1e-5
python scripts/run_notebooks.py --only 09
python scripts/run_notebooks.py --only 01 -p eps -3
make no_such_target
make test
```

```python
python -m nbhelpers.training --not_checked   # a Python block is not shell
```
"""


def test_the_check_refuses_drifted_commands_and_passes_good_ones():
    commands = [("synthetic.md", cwd, argv) for cwd, argv in extract_commands(SYNTHETIC)]
    assert len(commands) == 11  # the assignment is no command; the python block is not shell
    assert commands[4][1] == "notebooks" and commands[4][2][-2:] == ["no_such_parameter", "1"]  # joined, cd seen
    assert commands[3][2][-4:] == ["mini", "--stages", "validation", "--status"]  # the shell variable expanded
    bad = failures(commands)
    assert len(bad) == 7, "\n".join(bad)
    expected = ["unrecognized arguments: --no_such_flag 3", "'method' = 'foo' is not allowed",
                "does not take parameter(s) ['no_such_parameter']", "'configs' = 'auto' has no study selection",
                "no notebook numbered ['09']", "'eps' is in 1/255 units", "no target ['no_such_target']"]
    for text, message in zip(expected, bad, strict=True):
        assert text in message, message
    good = [shlex.join(a) for _, _, a in commands]
    assert all(not b.startswith(f"synthetic.md: {g}\n") for b in bad for g in (good[2], good[3], good[6], good[10]))


# ---------------------------------------------------------------------------------------------- --help
CLI_MODULES = ["nbhelpers.training", "nbhelpers.study_runs", "nbhelpers.grid_runs", "nbhelpers.grid",
               "nbhelpers.confirm", "nbhelpers.pretrain", "nbhelpers.paper_data", "nbhelpers.suite", "nbhelpers.score"]
CLI_SCRIPTS = ["run_notebooks", "sync_parameters", "findings_table", "gpu_check", "text_premises"]


def _parser(name: str) -> argparse.ArgumentParser:
    """The parser of a CLI module ('nbhelpers.x') or script ('scripts/x.py')."""
    if name.startswith("scripts/"):
        return _script(Path(name).stem).build_parser()
    return importlib.import_module(name).build_parser()


def test_every_command_line_is_listed_here():
    """A new command line (an ArgumentParser anywhere in nbhelpers/ or scripts/) must join the help check below."""
    found = {f"nbhelpers.{p.stem}" for p in (ROOT / "nbhelpers").glob("*.py") if "parse_args(" in p.read_text()}
    found |= {p.stem for p in (ROOT / "scripts").glob("*.py") if "parse_args(" in p.read_text()}
    assert found == set(CLI_MODULES) | set(CLI_SCRIPTS)


def help_problems(parser: argparse.ArgumentParser) -> list[str]:
    """'flag: why' for each action of parser without help text or without its default in the help."""
    formatter, out = parser._get_formatter(), []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flag = "/".join(action.option_strings) or action.dest
        if not (action.help or "").strip():
            out.append(f"{flag}: no help text")
            continue
        shown = formatter._get_help_string(action) % {**vars(action), "prog": parser.prog}
        if not action.required and "default" not in shown:
            out.append(f"{flag}: the help does not show its default: {shown}")
    return out


@pytest.mark.parametrize("name", [*CLI_MODULES, *(f"scripts/{s}.py" for s in CLI_SCRIPTS)])
def test_every_flag_has_help_text_and_shows_its_default(name):
    parser = _parser(name)
    assert not help_problems(parser), f"{name}: " + "; ".join(help_problems(parser))
    assert "(default:" in parser.format_help()


def test_the_help_check_finds_a_bare_flag():
    bare = argparse.ArgumentParser()
    bare.add_argument("--steps", type=int, default=3)
    bare.add_argument("--lr", type=float, default=0.1, help="learning rate")
    assert help_problems(bare) == ["--steps: no help text", "--lr: the help does not show its default: learning rate"]
    ours = config.cli_parser("a CLI")
    ours.add_argument("--lr", type=float, default=0.1, help="learning rate")
    config.add_arguments(ours, config.DispatchConfig)
    assert help_problems(ours) == [] and "learning rate (default: 0.1)" in ours.format_help()


def test_errors_name_the_unknown_method_and_profile_first(capsys):
    for argv, wanted in ((["--method", "foo"], "'method' = 'foo' is not allowed; choose one of ['ft_standard'"),
                         (["--profile", "huge"], "'profile' = 'huge' is not allowed; choose one of ['mini', 'paper']")):
        with pytest.raises(SystemExit) as exit_info:
            training.main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and wanted in err and "finetune_lr" not in err.splitlines()[-1]
    with pytest.raises(SystemExit) as exit_info:
        study_runs.main(["--profile", "huge", "--status"])
    assert exit_info.value.code == 2 and "choose one of ['mini', 'paper']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # a known method without a selection is still refused, after
        training.main(["--method", "ft_standard"])
    assert exit_info.value.code == 2 and "pass --finetune_lr" in capsys.readouterr().err


def test_run_notebooks_only_without_a_match_fails_naming_the_notebooks(capsys):
    runner = _script("run_notebooks")
    assert runner.main(["--only", "09"]) == 2
    err = capsys.readouterr().err
    assert "no notebook numbered ['09']" in err and "'07'" in err and "05_evaluation" in err
    assert runner.main(["--only", "01", "09"]) == 2  # one bad prefix is enough
    assert runner.main(["--only", "01", "--dry-run"]) == 0
    assert "1 notebook(s)" in capsys.readouterr().out
