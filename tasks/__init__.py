"""Prefect tasks: one step of a benchmark case each, calling into diffbench/."""
