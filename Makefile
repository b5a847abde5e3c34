# Two commands on a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := build/alpaca-blend
# llama.cpp is built for this CPU (-march=native) but without AMX: some VMs advertise AMX and
# fault on its first tile instruction (a general protection fault in ggml_backend_amx_mul_mat, seen
# on this project's build machine). On a machine where AMX works: make setup LLAMA_CMAKE_ARGS=
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS ?= -DCMAKE_C_FLAGS="$(NO_AMX)" -DCMAKE_CXX_FLAGS="$(NO_AMX)"
# llmblend never loads llama.cpp's multimodal library (mtmd, for LLaVA-style chat handlers): not built
LLAMA_BUILD_ARGS := $(LLAMA_CMAKE_ARGS) -DLLAVA_BUILD=OFF
# The wheel is built once per CPU (its flags: -march=native), llama-cpp-python version (pinned in
# constraints.txt) and build arguments, and kept here; pip's own cache cannot tell such builds apart.
LLAMA_KEY := $(shell (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null; grep llama constraints.txt; \
	echo '$(LLAMA_BUILD_ARGS)') | sha256sum | cut -c1-16)
LLAMA_WHEELS ?= $(HOME)/.cache/llmblend/llama-wheels/$(LLAMA_KEY)

.PHONY: setup test demo lint format clean

setup: $(STAMP)

# torch first, from the CPU wheel on the machine; the constraints file then keeps
# pip from replacing it with a CUDA build when it resolves the extras.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "llmblend needs Python >= 3.11; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# llama-cpp-python compiles llama.cpp on every core (minutes), unless LLAMA_WHEELS has this build
	ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || \
		CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) CMAKE_ARGS='$(LLAMA_BUILD_ARGS)' $(BIN)/python -m pip wheel \
		--quiet --no-deps --no-cache-dir -c constraints.txt -w $(LLAMA_WHEELS) llama-cpp-python
	$(BIN)/python -m pip install --quiet -c constraints.txt --find-links $(LLAMA_WHEELS) 'llama-cpp-python[server]'
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/llmblend data build alpaca-blend --out $(DEMO_DIR)
	$(BIN)/llmblend data stats $(DEMO_DIR)/dev.jsonl
	rm -f build/demo-ranked.jsonl build/demo-generated.jsonl build/demo-generated.failed.jsonl
	$(BIN)/llmblend rank $(DEMO_DIR)/dev.jsonl --out build/demo-ranked.jsonl --limit 8
	# pool-aware ranking: strengths of the 11 models from train, then rank dev with them
	# (the default terms add MBR consensus, which embeds every train answer: a few minutes more)
	$(BIN)/llmblend train pool $(DEMO_DIR)/train.jsonl --oracle gpt4_win --terms pool,length,rel_length --out build/demo-pool.json
	rm -f build/demo-ranked-pool.jsonl
	$(BIN)/llmblend rank $(DEMO_DIR)/dev.jsonl --pool build/demo-pool.json --out build/demo-ranked-pool.jsonl --limit 8
	$(BIN)/llmblend generate --instructions $(DEMO_DIR)/dev.jsonl --out build/demo-generated.jsonl --limit 2
	$(BIN)/llmblend blend "Give three tips for staying focused while studying."
	$(BIN)/llmblend compare "Name three primary colours." \
	    "The primary colours of pigment are red, yellow and blue; of light, red, green and blue." "Green."

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format:
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
