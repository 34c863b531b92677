# The two front-door commands: `make demo` and `make test`. Each sets itself up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= $(abspath $(firstword $(wildcard ../shared/data/mvtec/bottle /work/shared/data/mvtec/bottle)))
STAMP := $(VENV)/.installed

.PHONY: demo demo-steps test venv wheel-check clean

$(STAMP): requirements-ci.txt requirements-nodeps.txt setup.py
	@# a venv whose creation was interrupted has python but no pip: make it again
	test -x $(BIN)/pip || $(PY) -m venv --clear $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-ci.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# The whole loop on the bundled default, no camera and no network beyond a local broker:
# calibrate on MVTec bottle good images, then run the daemon replaying the broken_large
# test images as a camera into 127.0.0.1:1883, printing each verdict
# (watch with: mosquitto_sub -v -t 'patchcore/#'). A broker ensure-mosquitto starts for it is
# stopped again when the demo ends.
demo: $(STAMP)
	@test -n "$(DATA)" || { echo "MVTec bottle not found; set DATA=/path/to/mvtec/bottle"; exit 2; }
	./scripts/ensure-mosquitto $(MAKE) --no-print-directory demo-steps

demo-steps:
	$(BIN)/patchcore-edge calibrate --images $(DATA)/train/good --output out/model --force
	mkdir -p out/replay && cp $(DATA)/test/good/00[0-4].png out/replay/ && \
	  for f in $(DATA)/test/broken_large/00[0-4].png; do cp $$f out/replay/defect_$$(basename $$f); done
	$(BIN)/patchcore-edge run --config configs/demo-replay.yaml
	$(BIN)/patchcore-edge infer --model out/model $(DATA)/test/broken_large/000.png --output-dir out/heatmaps

# Unit + end-to-end tests; starts a local Mosquitto for them if none is listening on
# 127.0.0.1:1883 (stopped afterwards) and installs Debian's chromium + chromium-driver for the
# station page tests (as root).
test: $(STAMP)
	./scripts/ensure-chromium
	PATCHCORE_DATA=$(DATA) HF_HUB_OFFLINE=1 ./scripts/ensure-mosquitto $(BIN)/python -m pytest -q tests

# The wheel round trip (CI): build the wheel, install it non-editable into a fresh venv and run
# --help, calibrate and install-service from outside the source tree (scripts/wheel-check).
wheel-check: $(STAMP)
	DATA=$(DATA) PY=$(abspath $(BIN))/python ./scripts/wheel-check

clean:
	rm -rf $(VENV) out
