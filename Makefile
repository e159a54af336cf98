# robot_packer — the two set-up commands are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: venv demo test bench train fuzz sim-cell colcon-check lint clean

venv: $(STAMP)

# Re-installs only when requirements/setup files change (idempotent, fast on the second run).
$(STAMP): requirements.txt setup.py setup.cfg package.xml
	@bash scripts/system_deps.sh
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

demo: venv
	$(BIN)/robot-packer demo --out $(DEMO_OUT)

test: venv
	$(BIN)/python -m pytest -q test

bench: venv
	bash scripts/bench_all.sh
	# cpsat (in both side-by-side runs) needs the optional extra: pip install .[cpsat]
	FIRST=diffusion,heuristic SECOND=rejection,cem,cpsat bash scripts/bench_side_by_side.sh
	bash scripts/bench_domains.sh
	TIER=hard OBJECTS=4,6,8,10,12 PROBLEMS=50 SECOND=cpsat OUT=docs/bench/hard bash scripts/bench_side_by_side.sh
	$(BIN)/python scripts/execute_known.py --tier hard --objects 10,12 --problems 50 --out docs/bench/execute_hard.json
	$(BIN)/python scripts/execute_known.py --objects 6,8,10 --problems 20 --out docs/bench/execute_standard.json

train: venv
	bash scripts/train_all.sh

fuzz: venv
	ROBOT_PACKER_FUZZ_EXAMPLES=50000 $(BIN)/python -m pytest -q test/test_fuzz.py

sim-cell: venv
	bash scripts/sim_cell.sh

colcon-check: venv
	bash scripts/colcon_check.sh

clean:
	rm -rf $(VENV) build install log demo_out
