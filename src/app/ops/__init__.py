"""Operations: probes (/health, /ready), metrics (/metrics), retention of ended jobs."""
