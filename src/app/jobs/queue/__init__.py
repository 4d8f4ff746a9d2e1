"""The SAQ queue every process uses, and the worker's own Redis moves (take, mark, finish,
retry)."""
