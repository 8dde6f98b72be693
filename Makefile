# Two commands a fresh machine needs: `make smoke` (end-to-end pipeline) and `make test`.
# Both install the exact versions the suite last passed with (constraints.txt, written by `make lock`);
# torch and triton are pinned here (the local CPU build; the registries' newest torch is a CUDA build).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0
TRITON_PIN ?= triton==3.9.0
LOCK ?= constraints.txt
LATEST ?= .venv-latest
OUT ?= runs/smoke
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export TRITON_DEFAULT_FP_FUSION := 1

.PHONY: install smoke test test-latest lock test-gpu gpu-wheels gpu-rehearsal-venv bench gpu-check clean

# The GPU machine's image (shared/DEVICE.md): python 3.12, torch 2.11 CUDA, and these. The rehearsal venv
# mimics it with the local CPU torch; numpy 2.5.2 needs Python >= 3.12, Debian here offers 3.11 only.
GPU_VENV ?= .venv-gpu
GPU_PYTHON ?= $(shell python3.12 -c 'pass' 2>/dev/null && echo python3.12 || echo $(PYTHON))
GPU_NUMPY = $(shell $(GPU_PYTHON) -c 'import sys; print("2.5.2" if sys.version_info >= (3, 12) else "2.4.*")')
GPU_IMAGE_PINS := triton==3.6.0 transformers==5.17.0 tokenizers==0.23.2 safetensors==0.8.0 huggingface_hub==1.33.0 pytest
# what the image lacks and gpu_first.sh needs: pure-Python wheels only (omegaconf 2.4 needs PyYAML, in the image)
GPU_CARRIED := omegaconf==2.4.0

install: $(VENV)/.installed

# $(1): venv, $(2): pip constraint flags (the lock, or only torch/triton for test-latest)
define make_venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install -q --upgrade pip
	$(1)/bin/pip install -q $(2) $(TORCH_PIN) $(TRITON_PIN)
	$(1)/bin/pip install -q $(2) $(3) -e '.[dev]' xgboost-cpu
	# build isolation would pull a multi-GB CUDA torch; DeepSpeed builds against the torch above
	$(1)/bin/pip install -q $(2) $(3) --no-build-isolation 'deepspeed>=0.19.8,<0.20'
endef

$(VENV)/.installed: setup.py $(LOCK)
	$(call make_venv,$(VENV),-c $(LOCK))
	touch $@

smoke: install
	$(BIN)/masklab smoke --out $(OUT)

test: install
	-$(MAKE) gpu-wheels gpu-rehearsal-venv  # test_gpu_first.py skips without them, except under CI=true
	$(BIN)/python -m pytest -q -m "not gpu" tests

# The newest releases that setup.py's ranges allow, in a venv of their own (not part of CI): run it
# before refreshing the lock or releasing, so drift is caught before users meet it.
test-latest:
	rm -rf $(LATEST)
	echo "$(TORCH_PIN)" > $(LATEST).pins && echo "$(TRITON_PIN)" >> $(LATEST).pins
	$(call make_venv,$(LATEST),-c $(LATEST).pins,--upgrade --upgrade-strategy eager)
	$(LATEST)/bin/pip freeze --exclude-editable > $(LATEST).freeze
	$(LATEST)/bin/python -m pytest -q -m "not gpu" tests

# Regenerate the lock from the venv that just passed `make test` (after `make test-latest`, from that one:
# make lock VENV=.venv-latest). torch/triton are written as the pins above.
lock:
	test -x $(BIN)/pip
	( echo "# Exact versions \`make test\` last passed with (\`make lock\`, $$(date -u +%Y-%m-%d), python $$($(BIN)/python -c 'import platform; print(platform.python_version())'))."; \
	  echo "# Used as pip constraints by make install / smoke / test and CI; setup.py keeps the ranges."; \
	  $(BIN)/pip freeze --exclude-editable | grep -v -E '^(torch|triton)==' ; \
	  echo "$(TORCH_PIN)"; echo "$(TRITON_PIN)" ) > $(LOCK).new && mv $(LOCK).new $(LOCK)

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

# the detection table includes the smoke checkpoint: the smoke runs first when it has not yet.
# `make bench BENCH_ARGS=--quick`: every script at tiny sizes (a check that they run)
bench: install
	test -f $(OUT)/smoke_summary.json || $(BIN)/masklab smoke --out $(OUT)
	$(BIN)/python -m benchmarks.run_all $(BENCH_ARGS)

gpu-check: install
	$(BIN)/masklab gpu-check

clean:
	rm -rf runs build *.egg-info $(GPU_VENV) gpu_wheels
