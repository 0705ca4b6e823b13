"""CLIP score and KID (KID from torchmetrics), when the user gives a CLIP model that is already here.

The model is read from a local folder or an `s3://` mirror (transformers layout, safetensors weights only) and is
never downloaded from the internet: cluster nodes often cannot reach it, and an evaluation must not depend on it.
KID is computed on the CLIP image features (torchmetrics' default Inception weights would be a download).
Without a model both are skipped, and the report says so.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from artlora.diffusion import model_sources
from artlora.diffusion.model_sources import ModelLoadError
from artlora.io import storage

log = logging.getLogger(__name__)

SKIPPED = "CLIP score and KID were skipped: no clip_model was given (a local folder or s3:// mirror of a CLIP model)"


class _ImageFeatures(torch.nn.Module):
    """CLIP image embeddings of uint8 images [n, 3, h, w]: the feature extractor KID measures with."""

    def __init__(self, model, processor):
        super().__init__()
        self.model, self.processor = model, processor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        inputs = self.processor(images=list(images.permute(0, 2, 3, 1).numpy()), return_tensors="pt")
        return self.model.get_image_features(**inputs).pooler_output.float()


def check_reference(clip_model: str | None) -> None:
    """Refuse, before any work, a CLIP model that is neither a local folder nor an s3:// mirror."""
    if clip_model is not None and not storage.is_s3(clip_model) and not Path(clip_model).expanduser().is_dir():
        raise ModelLoadError(
            f"clip_model {clip_model!r} is not a local folder or an s3:// URI (evaluation never downloads models: "
            "save a CLIP model with save_pretrained(FOLDER, safe_serialization=True) and give FOLDER, or unset it)"
        )


@torch.no_grad()
def measure(
    clip_model: str | None,
    prompts: dict[str, list[str]],
    painted: dict[str, np.ndarray],
    real: dict[str, tuple[np.ndarray, list[str]]],
) -> dict[str, float]:
    """{"clip_score", "kid"} of the painted images (per style: prompts[style] painted as painted[style]) against
    the real held-out images, or {} without a model."""
    if clip_model is None:
        return {}
    from torchmetrics.image.kid import KernelInceptionDistance
    from transformers import CLIPModel, CLIPProcessor

    folder = model_sources.local_folder(clip_model)
    model = CLIPModel.from_pretrained(folder, use_safetensors=True).eval()
    processor = CLIPProcessor.from_pretrained(folder)
    styles = sorted(painted)
    fake = torch.from_numpy(np.concatenate([painted[s] for s in styles])).permute(0, 3, 1, 2)
    texts = [prompt for s in styles for prompt in prompts[s][: len(painted[s])]]
    real_images = torch.from_numpy(np.concatenate([real[s][0] for s in styles])).permute(0, 3, 1, 2)
    features = _ImageFeatures(model, processor)
    kid = KernelInceptionDistance(feature=features, subset_size=min(len(fake), len(real_images)), subsets=20)
    kid.update(real_images, real=True)
    kid.update(fake, real=False)
    kid_mean, _ = kid.compute()
    return {"clip_score": _clip_score(model, processor, features(fake), texts), "kid": float(kid_mean)}


def _clip_score(model, processor, image_features: torch.Tensor, texts: list[str]) -> float:
    """CLIP score as torchmetrics defines it: 100 x the cosine of image and caption embeddings, at least 0,
    averaged (computed here because torchmetrics 1.9 reads CLIP's outputs as transformers 4 gave them)."""
    tokens = processor(text=texts, return_tensors="pt", padding=True, truncation=True)
    text_features = model.get_text_features(**tokens).pooler_output.float()
    cosine = torch.nn.functional.cosine_similarity(image_features, text_features, dim=-1)
    return float((100 * cosine).clamp(min=0).mean())
