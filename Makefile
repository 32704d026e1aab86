# massact_viz: the two set-up commands of the README are `make demo` and `make test`.
# Both create .venv on first use (torch pinned to the CPU wheel this machine has; see README for GPUs).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PROMPT  ?= a red circle on a blue background
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test lab bench shapes-train shapes-card clean

$(BIN)/massact-viz: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[lab,test]"
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq chromium); } \
	  || echo "note: no chromium on PATH; static figure export (PNG/SVG/PDF) needs it: sudo apt-get install -y chromium (or set BROWSER_PATH)"
	touch $@

demo: $(BIN)/massact-viz  ## scan the embedded default model and print its massive channels
	$(BIN)/massact-viz scan --prompt "$(PROMPT)" --out runs/demo

test: $(BIN)/massact-viz  ## the whole test suite (what CI runs); one thread: tiny models gain nothing from more
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

lab: $(BIN)/massact-viz  ## open JupyterLab on the notebooks
	$(BIN)/jupyter lab notebooks/

bench: $(BIN)/massact-viz  ## capture overhead, memory and probe benchmarks (writes benchmarks/*results.json)
	$(BIN)/python benchmarks/capture_overhead.py
	$(BIN)/python benchmarks/probes.py

# the recipe of the shipped CPU segments (data/shapes/CARD.md; the binding loss since step 60767, whose attention
# softening was a one-time start and is not repeated), data-parallel over PROCESSES processes: by default
# one per GPU, else two of one thread each (on 2 cores faster than one process of two threads), one on one core;
# PROCESSES=1: one process with every core's threads
SHAPES_RECIPE = --batch 64 --lr 1.5e-4 --warmup 100 --lr-schedule cosine --ema 0.998 --p-two $(or $(P_TWO),0.7) --binding-loss 0.05
PROCESSES ?= $(shell $(BIN)/python -c "import os, torch; print(torch.cuda.device_count() or min(2, os.cpu_count() or 1))")
SHAPES_LAUNCH = $(if $(filter 1,$(PROCESSES)),$(BIN)/python,OMP_NUM_THREADS=1 $(BIN)/torchrun --standalone --nproc-per-node $(PROCESSES))

shapes-train: $(BIN)/massact-viz  ## continue training the shipped teaching model (resumes runs/shapes-seed0/ckpt.pt if there is one)
	$(SHAPES_LAUNCH) -m massact_viz.shapes.train --out data/shapes --init-from data/shapes --seed 0 --minutes $(or $(MINUTES),60) $(SHAPES_RECIPE)

shapes-card: $(BIN)/massact-viz  ## measure the shipped teaching model: data/shapes/card.json, CARD.md and samples.png
	$(BIN)/python benchmarks/shapes_card.py

clean:
	rm -rf runs/ .pytest_cache
