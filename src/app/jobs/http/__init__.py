"""The jobs API over HTTP: controllers, request and response bodies, failures, health."""
