# The two commands of the README:  `make reproduce`  (every notebook -> figures/ results/)  and  `make test`.
# Both create the virtual environment .venv themselves (Python 3.11) on first use, from requirements/lock.txt.
# An existing environment instead (conda or venv, no second copy):  make test PY=/path/to/env/bin/python
# (it must hold the lock's set and the project: see docs/SETUP.md; `make check-env PY=...` says what is missing).
PYTHON ?= python3.11
VENV   ?= .venv
PY     ?= $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# what every target needs first: the project's .venv, or a check of the environment PY names
ENV    := $(if $(filter $(VENV)/bin/python,$(PY)),$(STAMP),check-env)

.PHONY: venv check-env lock reproduce study test slurm pretrain benchmark clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/lock.txt requirements/torch.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH, or run: make PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/lock.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -c "import nbhelpers, open_clip, torchattacks; print('environment ok: torch', __import__('torch').__version__, 'torchvision', __import__('torchvision').__version__)"
	touch $(STAMP)

check-env:
	@$(PY) -c "import nbhelpers, open_clip, torchattacks, papermill, nbval" || { echo "$(PY) lacks the project's environment: $(PY) -m pip install -r requirements/lock.txt && $(PY) -m pip install --no-deps -e ."; exit 1; }

# after changing pyproject.toml's dependencies: resolve them in a fresh .venv and write the lock from it
lock:
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/torch.txt
	$(PY) -m pip install --quiet -c requirements/torch.txt -e ".[test]"
	{ sed -n '/^#/p' requirements/lock.txt; $(PY) -m pip freeze --exclude-editable | grep -v '^tima-repro'; } > requirements/lock.txt.tmp
	mv requirements/lock.txt.tmp requirements/lock.txt
	touch $(STAMP)

reproduce: $(ENV)
	$(PY) scripts/run_notebooks.py

# notebook 06's study: trains and evaluates what results/06_study.jsonl lacks for this code (resumable; about
# 2 hours on 2 CPU cores from an empty store, 23 minutes on one H100 with --device cuda), then renders 06 in place
study: $(ENV)
	$(PY) -m nbhelpers.study_runs
	$(PY) scripts/run_notebooks.py --only 06

test: $(ENV) slurm
	TQDM_DISABLE=1 $(PY) -m pytest

# Debian's slurm-wlm and munge for tests/test_slurm_cluster.py (a one-node cluster on localhost, started by the
# test): installed where this runs as root with apt-get and they are missing; never fails (the test then skips)
slurm:
	@bash scripts/install_slurm.sh

pretrain: $(ENV)
	$(PY) -m nbhelpers.pretrain

benchmark: $(ENV)
	$(PY) -m benchmarks.run_all

clean-venv:
	rm -rf $(VENV)
