"""Import a script of scripts/ as a module (its parser, main and helpers), for the tests that check scripts."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py as a module (imported, not run)."""
    spec = importlib.util.spec_from_file_location(f"_doc_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is imported
    spec.loader.exec_module(module)
    return module
