# Two commands do everything on a fresh machine:
#   make demo   set up, generate the offline sample library, start Prefect (server + worker +
#               nightly deployment) and run `prefect deployment run 'ingest/nightly'` on it
#   make test   set up, check lint, format and the import layers, and run the test suite
# Both are idempotent: setup is redone only when requirements.lock or pyproject.toml change.

VENV   ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
PY      = $(VENV)/bin/python
SUDO    = $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP   = $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED = false
export DO_NOT_TRACK = 1

.PHONY: setup demo test server-stop clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq ffmpeg)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

demo: setup
	$(VENV)/bin/toonface sample --out sample_library
	$(VENV)/bin/toonface server start --library sample_library --data-root data
	. .toonface/env && $(VENV)/bin/prefect deployment run 'ingest/nightly' --watch
	$(VENV)/bin/toonface manifest --data-root data history
	@echo "Dataset report of the latest version (open it in a browser):"
	@$(VENV)/bin/toonface report --data-root data
	@echo
	@echo "Manifest: $(CURDIR)/data/manifest  (Prefect UI: http://127.0.0.1:4200, stop with: make server-stop)"
	@echo "Open it in pandas:"
	@echo "  $(PY) -c \"from data_manifest import Manifest; print(Manifest('data').read('faces').head())\""
	@echo "Verify its pre-labels in the browser:"
	@echo "  $(VENV)/bin/toonface annotate add-user me --data-root data && $(VENV)/bin/toonface annotate serve --data-root data"

test: setup
	@# the verification page's browser test drives Debian's headless Chromium through chromedriver
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

server-stop:
	$(VENV)/bin/toonface server stop

clean: server-stop
	rm -rf data sample_library .toonface
