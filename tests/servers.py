"""Real servers for remote tests (filled in with the remote backends)."""
