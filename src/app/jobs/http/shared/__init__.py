"""What every jobs route shares: bodies, redaction, dependencies, errors as 4xx JSON."""
