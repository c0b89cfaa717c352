"""The reference engine: a diffusers pipeline served over SGLang-Diffusion's HTTP API."""
