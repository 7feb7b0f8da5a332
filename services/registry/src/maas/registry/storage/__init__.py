"""Artifact bytes: the content-addressed store and the format checks."""
