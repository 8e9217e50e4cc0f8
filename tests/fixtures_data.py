"""Fixtures that generate synthetic datasets on disk."""
