"""Prefect flows: thin compositions of tasks/; the logic lives in diffbench/."""
