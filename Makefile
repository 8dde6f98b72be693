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

.PHONY: install smoke test test-gpu gpu-wheels gpu-rehearsal-venv bench gpu-check clean

# The GPU machine's image (shared/DEVICE.md): python 3.12, torch 2.11 CUDA, and these. The rehearsal venv
# mimics it with the local CPU torch; numpy 2.5.2 needs Python >= 3.12, Debian here offers 3.11 only.
GPU_VENV ?= .venv-gpu
GPU_PYTHON ?= $(shell python3.12 -c 'pass' 2>/dev/null && echo python3.12 || echo $(PYTHON))
GPU_NUMPY = $(shell $(GPU_PYTHON) -c 'import sys; print("2.5.2" if sys.version_info >= (3, 12) else "2.4.*")')
GPU_IMAGE_PINS := triton==3.6.0 transformers==5.17.0 tokenizers==0.23.2 safetensors==0.8.0 huggingface_hub==1.33.0 pytest
# what the image lacks and gpu_first.sh needs: pure-Python wheels only (omegaconf 2.4 needs PyYAML, in the image)
GPU_CARRIED := omegaconf==2.4.0

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
	-$(MAKE) gpu-wheels gpu-rehearsal-venv  # test_gpu_first.py skips without them, except under CI=true
	$(BIN)/python -m pytest -q -m "not gpu" tests

# The one device command (README "GPU status"): on the GPU image's own python3, nothing installed.
test-gpu:
	bash benchmarks/gpu_first.sh

# the wheels that travel with the checkout (git-ignored; `carry: ["gpu_wheels"]`)
gpu-wheels: gpu_wheels/.done

gpu_wheels/.done:
	$(PYTHON) -m pip download -q --python-version 3.12 --only-binary=:all: --no-deps -d gpu_wheels $(GPU_CARRIED)
	touch $@

# the device's stack on CPU, for `bash benchmarks/gpu_first.sh --dry-run` (tests/benchmarks/test_gpu_first.py)
gpu-rehearsal-venv: $(GPU_VENV)/.built

$(GPU_VENV)/.built:  # cached: `make clean` rebuilds it
	rm -rf $(GPU_VENV)
	$(GPU_PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/pip install -q $(TORCH_PIN) $(GPU_IMAGE_PINS) "numpy==$(GPU_NUMPY)"
	touch $@

# the detection table includes the smoke checkpoint: the smoke runs first when it has not yet
bench: install
	test -f $(OUT)/smoke_summary.json || $(BIN)/masklab smoke --out $(OUT)
	$(BIN)/python -m benchmarks.run_all

gpu-check: install
	$(BIN)/masklab gpu-check

clean:
	rm -rf runs build *.egg-info $(GPU_VENV) gpu_wheels
