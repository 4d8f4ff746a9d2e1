"""What every HTTP module shares: the one error body, documented error answers, strict bodies."""
