"""What several stages share about Stable Diffusion itself: loading a base model, the tiny in-code models,
prompt encoding, the objective, the held-out loss, the architecture and device checks."""
