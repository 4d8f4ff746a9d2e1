# syntax=docker/dockerfile:1

# One image for the API, the SAQ worker and the one-shot migration job; the command picks
# the role (see docker-compose.yml). The default command runs the API.

# ---------------------------------------------------------------------------------------------
# builder: the locked dependencies, and nothing else, in /app/.venv with uv
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

# Only pyproject.toml and uv.lock reach this stage, so a code change never rebuilds the venv.
# The project itself is not installed: the runtime stage puts src/ on PYTHONPATH instead
# (what an editable install's .pth file would do), keeping the venv independent of the code.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project

# ---------------------------------------------------------------------------------------------
# runtime: the same Python, then the venv and the code as separate layers, no uv, non-root
# ---------------------------------------------------------------------------------------------
FROM python:3.12-slim-bookworm AS runtime

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --no-log-init \
        --home-dir /nonexistent --shell /usr/sbin/nologin app

WORKDIR /app

# Owned by root and read-only for the app user; nothing is written under /app at runtime.
# Dependencies first: this layer is reused as long as uv.lock and pyproject.toml are unchanged.
COPY --from=builder /app/.venv /app/.venv
# The code last, the layer a code change rebuilds. src/app/config.py finds the migrations two
# folders above it (/app/db/migrations).
COPY db ./db
COPY src ./src

ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONPATH=/app/src \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001

EXPOSE 8000

# For the API; docker-compose.yml overrides it per service (the worker and migrate serve no HTTP).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

CMD ["uvicorn", "--factory", "app.asgi:create_app", "--host", "0.0.0.0", "--port", "8000"]
