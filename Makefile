# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Reinstall only when the dependency list changes. torch/torchvision are pinned to the
# versions whose wheels this machine keeps locally.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/effnet models
	@echo
	$(VENV)/bin/effnet scale --phi 1
	@echo
	$(VENV)/bin/effnet predict $$($(PY) -c 'import skimage, pathlib; d = pathlib.Path(skimage.data.__file__).parent; print(*(d / f for f in ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg")))') \
		--model efficientnet_lite0 --weights lite0 --top-k 3

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: lint
	$(PY) -m pytest -q --durations=10

bench: $(STAMP)
	$(PY) benchmarks/inference_speed.py --batch-sizes 1,32 --json benchmarks/inference_speed.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
