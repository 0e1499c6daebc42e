# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build from local disk on our machines; on a CUDA machine install your torch first
# (or run `make TORCH=torch setup`).
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed
# lmms-eval without its declared requirements (they pull a CUDA torch and torchvision), plus the
# pinned `lmms` extra of pyproject.toml: what its CLI, registry and evaluator import.
LMMS_EVAL ?= lmms-eval==0.7.3
LMMS_STAMP := $(VENV)/.lmms-installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# pytest workers (pytest-xdist, one file per worker at a time): one per core, at most 4 — every
# worker builds the session's tiny models once.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: setup lmms demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

$(LMMS_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[dev,lmms]"
	$(BIN)/pip install -q --no-deps "$(LMMS_EVAL)"
	$(BIN)/python -c "import importlib.util as u, sys; sys.exit('error: torchvision got installed' if u.find_spec('torchvision') else 0)"
	$(BIN)/python -c "import lmms_eval.evaluator, lmms_eval.models as m; \
		assert {'llava_gc2', 'llava_hf_gc2', 'llava_onevision_gc2', 'qwen2_vl_gc2', 'qwen2_5_vl_gc2'} <= set(m.AVAILABLE_MODELS)"
	touch $(LMMS_STAMP)

lmms: $(LMMS_STAMP)

demo: $(STAMP)
	$(BIN)/python -m llava.demo

test: $(STAMP) $(LMMS_STAMP)
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check llava tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) checkpoints build *.egg-info .pytest_cache
