"""Who may do what: roles, API keys, the one guard, and the audit of state-changing calls."""
