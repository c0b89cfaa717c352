"""diffbench: benchmarks diffusion serving engines against each other, night after night."""

__version__ = "0.1.0"
