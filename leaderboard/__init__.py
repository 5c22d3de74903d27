"""Leaderboards generated from result files (never hand-edited)."""
