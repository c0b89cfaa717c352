"""The dashboard: one table row per case, one trend chart per case."""

from diffbench.dashboard.page import Dashboard, build

__all__ = ["Dashboard", "build"]
