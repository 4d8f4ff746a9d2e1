"""Operators' actions on jobs, and the queues."""
