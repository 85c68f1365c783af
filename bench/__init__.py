"""Benchmarks: scripts run as ``.venv/bin/python bench/<name>.py`` (and importable, for tests)."""
