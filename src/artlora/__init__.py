"""artlora: teach Stable Diffusion an artistic style with LoRA."""

__version__ = "0.1.0"
