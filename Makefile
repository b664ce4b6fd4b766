# Thin layer over `python -m convert` / `python -m quantize`: one stage per process, so each
# stage's peak RSS is its own. Stages skip themselves when their inputs are unchanged.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODEL ?= videoseal
OUT ?= artifacts
THREADS ?= 2

ARGS = --model $(MODEL) --out $(OUT) --threads $(THREADS) \
	$(if $(CKPT),--ckpt $(CKPT)) \
	$(if $(filter 1 yes true,$(RANDOM_INIT)),--random-init) \
	$(if $(filter 1 yes true,$(ALLOW_ZERO_WEIGHTS)),--allow-zero-weights) \
	$(if $(IMAGES),--images $(IMAGES)) \
	$(if $(filter 1 yes true,$(FORCE)),--force)

.PHONY: setup demo test test-full convert load inspect export tflite verify quantize bench bench-scale kernel-bench package robustness train-tiny calibration-manifest lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The main job on the embedded default model (the trained tiny pair, models/tiny/): watermark
# held-out photos (or IMAGES=dir, any size), convert + quantize the extractor, decode with PyTorch,
# FP32 and INT8, check false positives: $(OUT)/demo/demo.{json,md}. CKPT= a retrained pair.
DEMO_ARGS = --out $(OUT) --threads $(THREADS) $(if $(IMAGES),--images $(IMAGES)) $(if $(CKPT),--ckpt $(CKPT))
demo: setup
	$(PY) -m demo watermark $(DEMO_ARGS)

# The demo's images after JPEG 80/50, resize 0.5, crop 0.5, brightness, blur: PyTorch, FP32, INT8,
# INT8-dynamic side by side in $(OUT)/demo/robustness.{json,md,png}.
robustness: setup
	$(PY) -m demo robustness $(DEMO_ARGS)

# Train the tiny pair on this machine's CPU (about 25 minutes on 2 cores; resumable: rerun to
# continue). Writes $(TRAIN_DIR)/export/; `make demo CKPT=$(TRAIN_DIR)/export/checkpoint.safetensors` uses it.
TRAIN_DIR ?= runs/tiny
TRAIN_ARGS ?=
train-tiny: setup
	$(PY) -m demo.train_tiny --ckpt-dir $(TRAIN_DIR) --export $(TRAIN_DIR)/export --threads $(THREADS) $(TRAIN_ARGS)

test: setup
	$(PY) -m pytest -q

test-full: setup
	$(PY) -m pytest -q -m fullsize

inspect export tflite load: setup
	$(PY) -m convert $@ $(ARGS)

verify: setup
	$(PY) -m convert verify $(ARGS) --variant $(or $(VARIANT),fp32)

convert: setup
	$(PY) -m convert load $(ARGS)
	$(PY) -m convert export $(ARGS)
	$(PY) -m convert tflite $(ARGS)
	$(PY) -m convert verify $(ARGS) --variant fp32

# Quantized variants from the FP32 artifact (never re-converts): int8, int8-full, int8-dynamic, fp16.
# CALIB=dir adds calibration images; IO=int8 gives int8.tflite integer input and output.
quantize: setup
	$(PY) -m quantize --model $(MODEL) --out $(OUT) --threads $(THREADS) $(if $(CKPT),--ckpt $(CKPT)) \
		$(if $(filter 1 yes true,$(RANDOM_INIT)),--random-init) $(if $(IMAGES),--images $(IMAGES)) \
		$(if $(CALIB),--calib $(CALIB)) $(if $(IO),--io $(IO)) $(if $(filter 1 yes true,$(FORCE)),--force) \
		$(if $(QUANT_VARIANTS),--variants $(QUANT_VARIANTS))

# Latency (1 and 2 threads, interleaved), size and peak RSS of every variant: bench.json / bench.md.
bench: setup
	$(PY) -m convert bench $(ARGS) $(if $(RUNS),--runs $(RUNS))

# Full size, RANDOM weights: every stage of VideoSeal 1.0 and ChunkySeal in its own process, wall
# time and peak RSS from the kernel, into each bench.json and $(OUT)/scaling.{json,md}. Not in
# `make test` (about an hour on 2 cores); the same code runs on chunkyseal-mini in the tests.
SCALE_MODELS ?= videoseal,chunkyseal
bench-scale: setup
	$(PY) -m convert.bench_scale --models $(SCALE_MODELS) --out $(OUT) --threads $(THREADS) --force $(if $(RUNS),--runs $(RUNS)) \
		$(if $(filter 1 yes true,$(RESUME)),--resume)

# Deployment bundle in $(DIST)/<model>/: verified .tflite files with embedded metadata, model.json,
# golden vectors, reports, torch-free run_extractor.py, manifest.json. REVERIFY=1 re-verifies changed files.
DIST ?= dist
VARIANTS ?= int8,fp16,fp32
package: setup
	$(PY) -m package --model $(MODEL) --out $(OUT) --dist $(DIST) --variants $(VARIANTS) --threads $(THREADS) \
		$(if $(CKPT),--ckpt $(CKPT)) $(if $(filter 1 yes true,$(RANDOM_INIT)),--random-init) $(if $(filter 1 yes true,$(REVERIFY)),--reverify)

# One pointwise layer, float vs INT8: what bounds INT8 speed on this CPU ($(OUT)/kernel_bench.json).
kernel-bench: setup
	$(PY) -m quantize.kernel_bench --out $(OUT)

# Rewrite calibration_data/manifest.json from the fixed rule (commit the result).
calibration-manifest: setup
	$(PY) -m calibration_data.build

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean:
	rm -rf $(OUT) dist
