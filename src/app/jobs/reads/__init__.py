"""The read side: filters and the q language, the list's statements, stats, the service, the
event hub."""
