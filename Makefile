# Every target sets itself up: Python deps with uv (on this machine's Python, no downloads),
# the PostgreSQL/Redis server packages with apt-get when run as root.
SHELL := /bin/bash
UV := $(shell scripts/ensure-uv.sh)
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON_PREFERENCE := only-system
RUN := $(UV) run --locked
LITESTAR := $(RUN) litestar --app app.asgi:create_app

.PHONY: help install system-deps dev up down migrate test lint format bench bench-peers bench-growth bench-soak clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F '\t' '{printf "  %-12s %s\n", $$1, $$2}'

install: ## install the Python dependencies into .venv (uv, locked)
	$(UV) sync --locked

system-deps: ## install the PostgreSQL and Redis server packages if missing (root on Debian/Ubuntu; and promtool for lint/test)
	scripts/install-system-deps.sh

dev: install system-deps ## run PostgreSQL, Redis, the migrations, the API on 127.0.0.1:8000 and a worker, natively (open mode: no API key; API_PROCESSES, WORKER_PROCESSES)
	$(RUN) python scripts/dev.py

up: ## the same in Docker: docker compose up --build (open mode unless .env sets ADMIN_API_KEY)
	docker compose up --build

down: ## stop the Docker services
	docker compose down

migrate: install ## apply the Alembic migrations to DATABASE_URL
	$(LITESTAR) database upgrade --no-prompt

test: export WITH_BROWSER := 1
test: export WITH_PROMTOOL := 1
test: install system-deps ## run the whole test suite on throwaway PostgreSQL and Redis servers (and Chromium for tests/browser)
	$(RUN) pytest $(PYTEST_ARGS)

lint: install ## ruff (lint + format check), mypy, import-linter's layers, hadolint on the Dockerfile, the Compose spec on docker-compose.yml, promtool on the alert rules
	WITH_SERVERS=0 WITH_PROMTOOL=1 scripts/install-system-deps.sh
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) lint-imports
	$(RUN) hadolint Dockerfile
	$(RUN) check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	promtool check rules deploy/prometheus/alerts.yml

format: install ## apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

bench: export WITH_WRK := 1
bench: install system-deps ## run every benchmark scenario on throwaway servers (PostgreSQL durable as shipped); writes bench/results/latest.json
	$(RUN) python -m bench

bench-growth: export WITH_WRK := 1
bench-growth: install system-deps ## every read at 1M and 10M rows of history (tens of minutes); writes bench/results/growth.json
	$(RUN) python -m bench.growth

bench-soak: install system-deps ## an hour of triggers at half the drain rate, retention every minute (BENCH_SOAK_MINUTES); writes bench/results/soak.json
	BENCH_SOAK=1 $(RUN) python -m bench.soak

# The peers' packages (the `peers` group) go into a venv of their own, never into .venv.
bench-peers: system-deps ## plain SAQ, the tracked worker, Procrastinate and Celery side by side; writes bench/results/peers.json
	UV_PROJECT_ENVIRONMENT=.local/peers-venv $(UV) run --locked --no-default-groups --group peers python -m bench.peers

clean: ## stop the servers `make dev` started and delete their data (.local/, and its /var/tmp folder if any)
	-$(RUN) python scripts/local_servers.py clean --dir .local
	rm -rf .local
