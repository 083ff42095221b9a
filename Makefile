# The two commands of the README:  `make reproduce`  (every notebook -> figures/ results/)  and  `make test`.
# Both create the virtual environment .venv themselves (Python 3.11) on first use.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv reproduce study test slurm pretrain benchmark clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/torch.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH, or run: make PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/torch.txt
	$(PY) -m pip install --quiet -c requirements/torch.txt -e ".[test]"
	$(PY) -c "import nbhelpers, open_clip, torchattacks; print('environment ok: torch', __import__('torch').__version__, 'torchvision', __import__('torchvision').__version__)"
	touch $(STAMP)

reproduce: $(STAMP)
	$(PY) scripts/run_notebooks.py

# notebook 06's study: trains and evaluates what results/06_study.jsonl lacks for this code (resumable; about
# 2 hours on 2 CPU cores from an empty store, 23 minutes on one H100 with --device cuda), then renders 06 in place
study: $(STAMP)
	$(PY) -m nbhelpers.study_runs
	$(PY) scripts/run_notebooks.py --only 06

test: $(STAMP) slurm
	TQDM_DISABLE=1 $(PY) -m pytest

# Debian's slurm-wlm and munge for tests/test_slurm_cluster.py (a one-node cluster on localhost, started by the
# test): installed where this runs as root with apt-get and they are missing; never fails (the test then skips)
slurm:
	@bash scripts/install_slurm.sh

pretrain: $(STAMP)
	$(PY) -m nbhelpers.pretrain

benchmark: $(STAMP)
	$(PY) -m benchmarks.run_all

clean-venv:
	rm -rf $(VENV)
