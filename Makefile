# `make train` and `make test` set everything up on a fresh Linux machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: train test lint speed test-slurm

$(VENV)/installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

train: $(VENV)/installed  ## the main job: the default configuration, seed 1 (25M steps)
	$(PY) ppo_procgen.py --seed 1

test: $(VENV)/installed lint  ## lint + the whole test suite (tiny settings, two workers: ~9-10 min on 2 CPU cores)
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --durations=5

lint: $(VENV)/installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

speed: $(VENV)/installed  ## SPS of each option set, a few iterations each (benchmark/speed.sh)
	bash benchmark/speed.sh

test-slurm: $(VENV)/installed  ## the --slurm path against a real single-node Slurm on this machine (root; installs slurm-wlm)
	bash tests/slurm/run_local_slurm.sh
