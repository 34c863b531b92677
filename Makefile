# The two front-door commands: `make demo` and `make test`. Each sets itself up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= $(firstword $(wildcard ../shared/data/mvtec/bottle /work/shared/data/mvtec/bottle))
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

$(STAMP): requirements-ci.txt setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-ci.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Calibrate on the bundled MVTec bottle good images, then score the test images and write
# heatmap overlays to out/heatmaps (no camera, no network).
demo: $(STAMP)
	@test -n "$(DATA)" || { echo "MVTec bottle not found; set DATA=/path/to/mvtec/bottle"; exit 2; }
	$(BIN)/patchcore-edge calibrate --images $(DATA)/train/good --output out/model --force
	$(BIN)/patchcore-edge infer --model out/model $(DATA)/test/good $(DATA)/test/broken_large --output-dir out/heatmaps

# Unit + end-to-end tests; starts a local Mosquitto if none is listening on 127.0.0.1:1883.
test: $(STAMP)
	./scripts/ensure-mosquitto
	PATCHCORE_DATA=$(DATA) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) out
