"""Writing background_jobs: the state machine's statements, the recorder, progress, log lines,
events."""
