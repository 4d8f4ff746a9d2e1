"""The history monitor at /monitor: server-rendered pages over the jobs services."""
