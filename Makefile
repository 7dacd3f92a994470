# Two entry points (see README Quickstart): `make demo` and `make test`.
# Both create .venv, pin the CPU build of torch first (so pip never pulls a multi-GB CUDA build),
# then install maskaudit in editable mode.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0
# A real Label Studio server for the export test, in its own venv: it pins many packages.
LABEL_STUDIO_VENV ?= .venv-labelstudio
LABEL_STUDIO_PIN ?= label-studio==1.23.2
# Datumaro, the COCO reader under CVAT's "COCO 1.0" import, for the COCO export test (it pins pillow).
DATUMARO_VENV ?= .venv-datumaro
DATUMARO_PIN ?= datumaro==1.13.12
DEMO_DATA := examples/data/demo
DEMO_OUT := demo-output

.PHONY: install demo test test-all browser labelstudio datumaro bench clean

$(BIN)/maskaudit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/maskaudit

demo: install
	$(BIN)/python examples/make_example.py $(DEMO_DATA) --force
	$(BIN)/maskaudit scan $(DEMO_DATA) --out $(DEMO_OUT) --overwrite
	@echo "Demo results: $(abspath $(DEMO_OUT))/report.html and $(abspath $(DEMO_OUT))/scores.csv"

# Headless Chromium for the report's browser tests (Debian packages; needs root or sudo).
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

$(LABEL_STUDIO_VENV)/bin/label-studio:
	$(PYTHON) -m venv $(LABEL_STUDIO_VENV)
	$(LABEL_STUDIO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LABEL_STUDIO_VENV)/bin/python -m pip install --quiet $(LABEL_STUDIO_PIN)
	touch $@

# Label Studio for tests/test_export.py (about 2.5 minutes on a fresh machine).
labelstudio: $(LABEL_STUDIO_VENV)/bin/label-studio

$(DATUMARO_VENV)/bin/datum:
	$(PYTHON) -m venv $(DATUMARO_VENV)
	$(DATUMARO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DATUMARO_VENV)/bin/python -m pip install --quiet $(DATUMARO_PIN)
	touch $@

datumaro: $(DATUMARO_VENV)/bin/datum

test: install browser labelstudio datumaro
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m pip install --quiet '.[bench]'
	$(BIN)/python benchmarks/run_detection.py

clean:
	rm -rf $(DEMO_OUT) $(DEMO_DATA) build dist .pytest_cache
