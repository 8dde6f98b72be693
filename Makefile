# Two commands a fresh machine needs: `make smoke` (end-to-end pipeline) and `make test`.
# The venv gets the CPU torch build pinned here; the package itself asks only for torch>=2.4.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0
OUT ?= runs/smoke
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export TRITON_DEFAULT_FP_FUSION := 1

.PHONY: install smoke test test-gpu bench gpu-check clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e '.[dev]' xgboost-cpu
	# build isolation would pull a multi-GB CUDA torch; DeepSpeed builds against the torch above
	$(BIN)/pip install -q --no-build-isolation 'deepspeed>=0.14'
	touch $@

smoke: install
	$(BIN)/masklab smoke --out $(OUT)

test: install
	$(BIN)/python -m pytest -q -m "not gpu" tests

# one prepared script, under 8 minutes on one H100/H200: gpu tests, BERT-base bf16 steps, kernel timings
test-gpu: install
	PY=$(BIN)/python bash benchmarks/gpu_all.sh benchmarks/results_gpu.md

# the detection table includes the smoke checkpoint: the smoke runs first when it has not yet
bench: install
	test -f $(OUT)/smoke_summary.json || $(BIN)/masklab smoke --out $(OUT)
	$(BIN)/python -m benchmarks.run_all

gpu-check: install
	$(BIN)/masklab gpu-check

clean:
	rm -rf runs build *.egg-info
