"""The five pipeline stages, each a plain `run(config) -> result` function."""
