"""Slow, obviously-correct reference implementations the fast paths in less_hf are checked against."""
