"""Synthetic participants and measurement tools for consult-sfu."""
