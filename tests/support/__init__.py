"""Fakes and helpers several test packages share (issue 15: one home for them)."""
