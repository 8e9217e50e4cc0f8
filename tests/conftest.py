"""Shared pytest fixtures: generated datasets (fixtures_data.py) and a tiny SAM 3 (fixtures_model.py)."""

pytest_plugins = ["tests.fixtures_data", "tests.fixtures_model"]
