# condseg: one command for each thing a newcomer wants to do.
#   make setup       create .venv with everything (idempotent; a second run does nothing)
#   make test        the whole test suite (what CI runs)
#   make quickstart  train + evaluate CondInst on the built-in shapes dataset on this machine,
#                    then run the video demo with the model it trained
#   make demo        only that last step (on an existing quickstart model)
#   make gpu-check   on a machine with a CUDA GPU: CUDA tests, AMP training, DDP, demo, benchmarks
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.condseg-installed
QUICKSTART_CONFIG ?= configs/quickstart/condinst_R18_shapes.yaml
QUICKSTART_OUTPUT ?= output/quickstart
DEMO_VIDEO        ?= $(QUICKSTART_OUTPUT)/shapes_video.mp4

.PHONY: setup test test-fast quickstart demo gpu-check clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py scripts/setup_env.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup_env.sh
	@touch $@

test: setup
	$(PY) -m pytest -ra --durations=20 tests

test-fast: setup
	$(PY) -m pytest -ra -m "not slow" tests

quickstart: setup
	$(PY) tools/train_net.py --config-file $(QUICKSTART_CONFIG) OUTPUT_DIR $(QUICKSTART_OUTPUT)
	$(MAKE) --no-print-directory demo
	@echo "The evaluation report is $(QUICKSTART_OUTPUT)/inference/condseg_shapes_val/report/index.html"

demo: setup
	$(PY) -m condseg.data.shapes_video $(DEMO_VIDEO) --frames 90 --size 640x480 --fps 15 --seed 3
	$(PY) tools/demo.py --config-file $(QUICKSTART_CONFIG) --video-input $(DEMO_VIDEO) \
		--output $(QUICKSTART_OUTPUT)/demo.mp4 --json $(QUICKSTART_OUTPUT)/demo.json --confidence-threshold 0.4 \
		--opts MODEL.WEIGHTS $(QUICKSTART_OUTPUT)/model_final.pth
	@echo "The rendered video is $(QUICKSTART_OUTPUT)/demo.mp4 (per-frame predictions: $(QUICKSTART_OUTPUT)/demo.json)"

# no `setup` prerequisite: a GPU machine may have no package registry; it uses $(GPU_PY)
GPU_PY ?= $(shell [ -x $(PY) ] && echo $(PY) || echo python3)
gpu-check:
	$(GPU_PY) tools/gpu_check.py

clean:
	rm -rf $(VENV) build *.egg-info
