"""Trigger, read, list, stats and event streams of jobs."""
