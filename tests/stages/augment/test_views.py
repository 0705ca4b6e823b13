"""Views: made at exactly their bucket's size, every augmentation switchable, deterministic by seed."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from torchvision.transforms.v2 import functional as F

from artlora.config import AugmentConfig
from artlora.stages.augment import views


def colourful(width: int, height: int) -> Image.Image:
    """An image with no symmetry and every kind of colour, so that every augmentation changes it."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    pixels = torch.stack([x, y, (x * 7 + y * 3).sin() * 0.5 + 0.5]) * 255
    return F.to_pil_image(pixels.to(torch.uint8))


def view_config(**kwargs) -> AugmentConfig:
    return AugmentConfig(storage_root="s3://test-views", base_model="unused", **kwargs)


def test_views_have_the_bucket_size_and_depend_only_on_seed_image_and_index():
    image = Image.new("RGB", (90, 60), (200, 40, 40))
    image.paste((20, 20, 200), (0, 0, 45, 60))
    config = view_config(views_per_image=4, rotation_degrees=10.0, brightness=0.3, hue=0.1)
    for bucket in ((64, 32), (32, 64), (48, 48)):
        made = views.make_views(image, "a" * 64, config, bucket)
        assert made.shape == (4, 3, bucket[1], bucket[0]) and made.dtype == torch.float32
        assert made.min() >= -1 and made.max() <= 1
    made = views.make_views(image, "a" * 64, config, (64, 32))
    assert torch.equal(made, views.make_views(image, "a" * 64, config, (64, 32)))
    assert not torch.equal(made[0], made[1]), "the views of one image should differ"
    assert not torch.equal(made, views.make_views(image, "b" * 64, config, (64, 32)))
    assert not torch.equal(made, views.make_views(image, "a" * 64, view_config(seed=1, **_knobs(config)), (64, 32)))


def _knobs(config: AugmentConfig) -> dict:
    return config.model_dump(include={"views_per_image", "rotation_degrees", "brightness", "hue"})


OFF = {"crop_scale": (1.0, 1.0), "hflip": False, "rotation_degrees": 0.0, "brightness": 0.0, "contrast": 0.0}
OFF |= {"saturation": 0.0, "hue": 0.0}


@pytest.mark.parametrize(
    "switch",
    [{"crop_scale": (0.5, 0.9)}, {"hflip": True}, {"rotation_degrees": 8.0}, {"brightness": 0.4}]
    + [{"contrast": 0.4}, {"saturation": 0.4}, {"hue": 0.2}],
    ids=lambda switch: next(iter(switch)),
)
def test_every_augmentation_switches_on_and_off_alone(switch):
    image = colourful(80, 64)
    plain = views.make_views(image, "c" * 64, view_config(views_per_image=6, **OFF), (64, 32))
    # All off: every view is the largest centred crop of the bucket's shape, resized to the bucket.
    expected = F.to_dtype(F.resized_crop(F.pil_to_tensor(image), 12, 0, 40, 80, [32, 64]), scale=True) * 2 - 1
    assert all(torch.equal(view, expected) for view in plain)
    varied = views.make_views(image, "c" * 64, view_config(views_per_image=6, **{**OFF, **switch}), (64, 32))
    assert any(not torch.equal(view, expected) for view in varied)


def test_rotation_leaves_no_empty_corners():
    white = Image.new("RGB", (64, 48), (255, 255, 255))
    config = view_config(views_per_image=8, **{**OFF, "rotation_degrees": 20.0, "crop_scale": (0.5, 1.0)})
    for bucket in ((64, 32), (32, 64)):
        made = views.make_views(white, "d" * 64, config, bucket)
        assert made.min() > 0.98, "a rotated view shows the fill colour in a corner"


def test_a_bad_crop_scale_is_refused_naming_the_field():
    for scale in ((0.9, 0.5), (0.0, 1.0), (0.5, 1.5)):
        with pytest.raises(ValidationError, match="crop_scale"):
            view_config(crop_scale=scale)


def test_an_item_without_a_bucket_gets_a_square_of_the_resolution():
    class Old:  # a manifest item from before ingest assigned buckets
        pass

    class New:
        bucket = [64, 32]  # manifest.json stores it as a list

    assert views.item_bucket(Old(), 48) == (48, 48)
    assert views.item_bucket(New(), 48) == (64, 32)
