# Everything runs from a project-local virtualenv that the first target needing it builds.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install serve web screenshots test lint check-config bench clean autonomy-discover autonomy-prepare \
	autonomy-dry-run autonomy-run autonomy-status

# Reinstall when the build inputs change: the kernel, the generated code and the packaged default
# config (orxaq_grpc/_defaults/, from config/ and protos/) come from them. The exact tested versions
# come from constraints.txt; pyproject.toml holds only ranges.
$(INSTALLED): pyproject.toml setup.py constraints.txt _scoring.pyx _learning.pyx $(shell find protos config -type f)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

install: $(INSTALLED)

## Run the service on the shipped config (127.0.0.1:50051; Ctrl-C stops it).
serve: $(INSTALLED)
	$(BIN)/orxaq-grpc serve --config config

## The monitor as a web page for the service `make serve` runs: http://127.0.0.1:8089/ (Ctrl-C stops it).
web: $(INSTALLED)
	$(BIN)/orxaq-grpc web

## PNGs of the web monitor on sample traffic, laptop and phone size, into screenshots/ (needs chromium).
screenshots: $(INSTALLED)
	$(BIN)/python tools/web_screenshots.py --out screenshots

## The test suite: both kernel twins, a real server on loopback, the CLI.
test: $(INSTALLED)
	$(BIN)/python -m pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

check-config: $(INSTALLED)
	$(BIN)/orxaq-grpc check-config config

## Figures: kernel twins vs NumPy, sync vs asyncio server, Report vs Route, tracing cost, the fleet scenarios,
## the server under hostile load.
bench: $(INSTALLED)
	$(BIN)/python benchmarks/kernel.py
	$(BIN)/python benchmarks/server.py
	$(BIN)/python benchmarks/report.py
	$(BIN)/python benchmarks/tracing.py
	$(BIN)/python benchmarks/fleet.py
	$(BIN)/python benchmarks/hostile.py

## The autonomy loop over a task queue (README, "Unattended: the autonomy loop"); copy
## config/autonomy/queue.example.toml to $(QUEUE) to start (QUEUE=..., else ORXAQ_QUEUE, else
## autonomy/queue.toml). ORXAQ_ADDRESS and ORXAQ_TOKEN_FILE say where the service is and who calls.
QUEUE ?= $(or $(ORXAQ_QUEUE),autonomy/queue.toml)

autonomy-discover autonomy-prepare autonomy-dry-run autonomy-run autonomy-status: $(INSTALLED)
	$(BIN)/orxaq-grpc autonomy $(@:autonomy-%=%) --queue $(QUEUE)

clean:
	rm -rf $(VENV) build *.egg-info orxaq orxaq_grpc/_defaults _scoring.c _scoring.html _learning.c _learning.html orxaq_grpc/*.so
	find . -name __pycache__ -prune -exec rm -rf {} +
