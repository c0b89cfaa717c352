"""Deployment helpers: how runs are created from schedules, the UI and GitHub Actions."""
