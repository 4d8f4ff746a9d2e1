"""What operators do to jobs: retry and cancel, one by one or in bulk."""
