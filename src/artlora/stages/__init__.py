"""The five pipeline stages. Each is a package whose `run.py` holds its `run(config) -> result`; no stage imports
another (what two share lives in `data/` or `diffusion/`)."""
