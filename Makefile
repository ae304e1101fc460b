# Set-up and the two commands the README shows: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint clean

# Each stamp is remade only when pyproject.toml changes, so repeated runs are quick (idempotent).
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# the demo measures OpenVINO too (an optional runtime for users), so its install takes that extra
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[openvino]"
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

# `make demo`: measure the paper's 16 models on this machine (no data needed; about a minute on 2 cores), write
# CSV/JSON named after the hardware and runtimes plus the two plots to runs/demo/, then pick the most accurate model
# that sustains 30 FPS here with at most 6 MiB of fp32 weights, from those measurements.
DEMO_DIR ?= runs/demo
demo: $(VENV)/.installed
	$(BIN)/mobilenets bench --runtimes torch,ort,openvino --threads 1 --min-runs 20 --min-time 0.5 --batch 8 \
		--out $(DEMO_DIR)/ --plots $(DEMO_DIR)
	$(BIN)/mobilenets select --fps 30 --max-mb 6 --runtime ort --threads 1 --bench $(DEMO_DIR)/bench-*-t1-b8.json \
		--alpha-range 0.25,1.0,0.25 --res-range 128,224,32

# the suite in TEST_WORKERS processes (pytest-xdist), each test file in one of them (--dist loadfile: a module's
# fixtures, such as the interpreted kernel checks, are built once); TEST_WORKERS=0 runs it in this process
TEST_WORKERS ?= 2
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks scripts examples
	$(BIN)/ruff format --check src tests benchmarks scripts examples

clean:
	rm -rf $(VENV) build dist src/*.egg-info
