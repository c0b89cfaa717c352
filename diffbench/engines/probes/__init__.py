"""Scripts run with an engine's own Python (never imported by diffbench): they see the engine's code, we don't."""
