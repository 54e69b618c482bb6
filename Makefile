# condseg: one command for each thing a newcomer wants to do.
#   make setup       create .venv with everything (idempotent; a second run does nothing)
#   make test        the whole test suite (what CI runs)
#   make quickstart  train + evaluate CondInst on the built-in shapes dataset on this machine
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.condseg-installed
QUICKSTART_CONFIG ?= configs/quickstart/condinst_R18_shapes.yaml
QUICKSTART_OUTPUT ?= output/quickstart

.PHONY: setup test test-fast quickstart clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py scripts/setup_env.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup_env.sh
	@touch $@

test: setup
	$(PY) -m pytest -ra tests

test-fast: setup
	$(PY) -m pytest -ra -m "not slow" tests

quickstart: setup
	$(PY) tools/train_net.py --config-file $(QUICKSTART_CONFIG) OUTPUT_DIR $(QUICKSTART_OUTPUT)

clean:
	rm -rf $(VENV) build *.egg-info
