"""A stateful Daraja for development and tests, served under /daraja-sim/ (simulator mode only)."""
