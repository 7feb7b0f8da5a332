"""Persistence of jobs and their event logs."""
