"""The package version: its one home (pyproject.toml reads it; saved models record it). Imports nothing."""
__version__ = "0.1.0"
