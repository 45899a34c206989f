# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install lint bench clean data constraints

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Reinstall only when the dependency list changes. torch/torchvision are pinned to the
# versions whose wheels this machine keeps locally.
# stardist only carries the nuclei image and mask (effnet data make nuclei); --no-deps keeps its
# TensorFlow stack out, and effnet never imports it.
# Bytecode: pip would compile all 26,000 installed modules one after another (most are never
# imported: executorch's, transformers', coremltools'), so it installs with --no-compile and
# Python writes each module's bytecode when something first imports it. That needs
# PYTHONDONTWRITEBYTECODE unset: this machine's environment sets it, and with it every test
# process compiled what it imported again (the suite took 544 s instead of ~430 s).
unexport PYTHONDONTWRITEBYTECODE
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q --no-compile -c constraints.txt -e ".[dev]"
	$(PY) -m pip install -q --no-compile --no-deps "stardist==0.9.2"
	touch $(STAMP)

# The torch-free runtime (runtime/, the effnet-runtime package) in a venv of its own, without
# torch: its tests run exported files there, as a board would (tests/e2e/test_runtime_package.py).
RUNTIME_VENV := .venv-runtime
$(RUNTIME_VENV)/.installed: runtime/pyproject.toml constraints.txt $(wildcard runtime/src/effnet_runtime/*.py)
	rm -rf $(RUNTIME_VENV)
	$(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/pip install -q -c constraints.txt ./runtime
	touch $@

# Debian's packages: Fashion-MNIST, chromium with its driver for the test of effnet serve's page
# in a real headless browser, and PostgreSQL for the search's shared study on a real server. Where
# apt-get is missing the tests that need them skip, except under CI (CI set), where they fail.
FMNIST := /usr/share/datasets/fashion-mnist
APT_PACKAGES := dataset-fashion-mnist chromium chromium-driver postgresql
data:
	@(test -d $(FMNIST) && test -x /usr/bin/chromedriver && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1) || \
		! command -v apt-get >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null) || \
		echo "could not install $(APT_PACKAGES); the tests that need them will skip (fail under CI)"

demo: $(STAMP)
	$(VENV)/bin/effnet models
	@echo
	$(VENV)/bin/effnet scale --phi 1
	@echo
	$(VENV)/bin/effnet predict $$($(PY) -c 'import skimage, pathlib; d = pathlib.Path(skimage.data.__file__).parent; print(*(d / f for f in ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg")))') \
		--model efficientnet_lite0 --weights lite0 --top-k 3
	@echo
	rm -rf runs/demo
	$(VENV)/bin/effnet train --model efficientnet_lite0 --weights lite0 --data digits --image-size 48 --epochs 2 \
		--out runs/demo
	$(VENV)/bin/effnet eval --weights runs/demo/best.safetensors --split test --plot runs/demo/confusion.png
	$(VENV)/bin/effnet export --weights runs/demo/best.safetensors --out runs/demo/digits.onnx
	$(PY) -c 'from PIL import Image; from effnet.datasets.builtin import digits; t = digits()[0]["test"]; \
		[Image.fromarray(t.images[i]).save(f"runs/demo/test{i}_label{t.labels[i]}.png") for i in range(4)]'
	$(VENV)/bin/effnet predict runs/demo/test*_label*.png --weights runs/demo/digits.onnx --top-k 1

# ruff, and import-linter's contracts (pyproject.toml): the layers point down, no import cycles.
lint: $(STAMP)
	$(VENV)/bin/ruff check src runtime tests benchmarks
	$(VENV)/bin/ruff format --check src runtime tests benchmarks
	$(VENV)/bin/lint-imports

# Everything make test needs installed: the venvs (.[dev]; the torch-free runtime), Debian's packages.
install: $(STAMP) $(RUNTIME_VENV)/.installed data

# One pytest worker per core (pytest-xdist); conftest.py gives each worker one torch thread.
# -rs prints every skip and its reason; under CI only optional ones may skip (tests/conftest.py).
# tests/unit/<package> mirrors src/effnet; tests/e2e runs the commands end to end.
test: lint data $(RUNTIME_VENV)/.installed
	$(PY) -m pytest -q -rs -n 2 --dist worksteal --durations=15

# The everyday tier (under 2 min): the unit tests but those marked slow (over ~2.5 s each).
test-fast: $(STAMP)
	$(PY) -m pytest -q -rs -n 2 --dist worksteal -m "not slow" tests/unit

bench: $(STAMP)
	$(PY) benchmarks/inference_speed.py --batch-sizes 1,32 --json benchmarks/inference_speed.json
	$(VENV)/bin/effnet bench --batch-sizes 1,32 --runs 20 --min-seconds 3 --plot benchmarks/deploy_latency.png --json \
		> benchmarks/deploy_latency.json

# constraints.txt again from the current .venv (after changing pyproject.toml's dependencies and
# passing make test with them)
constraints: $(STAMP)
	head -3 constraints.txt > constraints.new
	$(PY) -m pip freeze --exclude-editable | grep -v -E '^(effnet|stardist)==' >> constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) .pytest_cache .ruff_cache
