# The two commands of README.md: `make run` (the app on the default model) and `make test`.
# Each is idempotent and does its own set-up: .venv, pinned requirements, the default embedded model.
PY      := .venv/bin/python
STAMP   := .venv/.effdepth-installed
PORT    ?= 8501
DEMO    ?=

.PHONY: run test setup setup-browser bench clean-cache

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)
	$(PY) -m effdepth install-default

# Debian chromium for the real-browser tests (never `playwright install`).
setup-browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

# `make run DEMO=1`: every visitor is in demo mode (read-only, cache only), whatever the link says
run: setup
	EFFDEPTH_DEMO=$(DEMO) $(PY) -m streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT)

test: setup setup-browser
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_skip.py
