"""The train stage: a LoRA adapter from the latent cache, resumable (`run.run`). Light on purpose: importing the
trainer (`trainer.py`, what the benchmarks time) loads neither the object-store client nor MLflow."""
