# Two commands for a fresh machine (see README.md):
#   make demo   the main job on the embedded default
#   make test   the test suite (.ci/run calls exactly this)
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench claims install clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The main job: train the tiny mSwitch of gin/experiments/demo.gin on the embedded
# corpus (about 10 minutes here), score its language pairs with sacreBLEU, print
# the table, and say how to open the web UI on the checkpoint.
DEMO_DIR ?= runs/demo
DEMO_EVAL_SENTENCES ?= 100

demo: $(STAMP)
	$(PY) -m mtmoe.train --gin_file=gin/experiments/demo.gin --gin.MODEL_DIR="'$(DEMO_DIR)'"
	$(PY) eval/per_language_bleu.py --checkpoint $(DEMO_DIR) --max_sentences $(DEMO_EVAL_SENTENCES)
	@echo
	@echo "Open the web UI on this model:  $(PY) -m app --checkpoint $(DEMO_DIR)   (then browse http://127.0.0.1:7860)"

# Lint (ruff: pyflakes, import order, bugbear) and the import contracts in pyproject.toml, then the tests.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

# The headline benchmarks one after the other on an idle machine (benchmarks/__main__.py), then BENCHMARKS.md.
bench: $(STAMP)
	$(PY) -m benchmarks

# The Switch Transformer's claims at this project's scale, with seeds (benchmarks/switch_claims.py):
# hours on this CPU, resumable (rerun to continue), then BENCHMARKS.md.
claims: $(STAMP)
	$(PY) -m benchmarks.switch_claims --plan cpu --commit
	$(PY) -m benchmarks.render

clean-venv:
	rm -rf $(VENV)
