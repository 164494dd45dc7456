# The two commands a newcomer needs: `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-12)
# Tests run against this machine's real PostgreSQL and Redis.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/chatorbit
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
# The suite runs in TEST_WORKERS pytest-xdist processes, a file at a time each (module fixtures stay shared);
# each worker has its own test database (test_chatorbit_gwN) and its own Redis database, from this list (one
# URL per worker: tests/xdist_slots.py).
TEST_WORKERS ?= 2
TEST_REDIS_URLS ?= $(TEST_REDIS_URL) redis://127.0.0.1:6379/1

.PHONY: run test bench install browser lint clean

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the browser tests (Debian's package; Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium chromium-driver)

# RUN_ARGS: options of run_embedded, e.g. make run RUN_ARGS="--no-traffic --addrport 127.0.0.1:8001"
run: install
	$(PY) manage.py run_embedded $(RUN_ARGS)

test: install browser
	@scripts/services_up.sh
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_REDIS_URL) REDIS_URL=$(TEST_REDIS_URL) \
		TEST_REDIS_URLS="$(TEST_REDIS_URLS)" $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: install
	$(PY) bench/run.py

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf var staticfiles
