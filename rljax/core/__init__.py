"""Shared building blocks: every agent is assembled from these."""
