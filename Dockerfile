# syntax=docker/dockerfile:1

# One image for the API, the SAQ worker and the one-shot migration job; the command picks
# the role (see docker-compose.yml). The default command runs the API.

# ---------------------------------------------------------------------------------------------
# builder: resolve the locked dependencies into /app/.venv with uv
# ---------------------------------------------------------------------------------------------
FROM python:3.12-slim-bookworm AS builder

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/

# Byte-compile for faster starts, copy (not hardlink) out of the cache mount, and use the
# image's own Python instead of downloading one.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.12

WORKDIR /app

# Dependencies only: this layer is rebuilt when pyproject.toml or uv.lock change, not the code.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project

# The project itself, installed editable so that src/app/config.py finds db/migrations two
# folders above it (/app/db/migrations). README.md is pyproject's readme.
COPY README.md ./
COPY src ./src
COPY db ./db
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev

# ---------------------------------------------------------------------------------------------
# runtime: the same Python, the venv and the code, no uv, a non-root user
# ---------------------------------------------------------------------------------------------
FROM python:3.12-slim-bookworm AS runtime

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --no-log-init \
        --home-dir /nonexistent --shell /usr/sbin/nologin app

# Owned by root and read-only for the app user; nothing is written under /app at runtime.
COPY --from=builder /app /app

ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
USER 10001:10001

EXPOSE 8000

# For the API; docker-compose.yml overrides it per service (the worker and migrate serve no HTTP).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

CMD ["uvicorn", "--factory", "app.asgi:create_app", "--host", "0.0.0.0", "--port", "8000"]
