"""The SAQ worker: queue configuration, lifecycle hooks and task functions."""
