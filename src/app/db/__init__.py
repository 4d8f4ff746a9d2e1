"""SQLAlchemy models of the service."""
