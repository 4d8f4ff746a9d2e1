"""The benchmark harness: `make bench` (or `uv run python -m bench`); see docs/benchmarks.md."""
