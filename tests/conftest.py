"""Shared pytest fixtures: generated datasets (tests/fixtures_data.py) and a tiny SAM 3 (tests/fixtures_model.py)."""

pytest_plugins = ["tests.fixtures_data", "tests.fixtures_model"]
