"""Caption variants: tag shuffling with leading tags kept, tag dropout at its rate, seeded and distinct."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from artlora.config import AugmentConfig
from artlora.data.dataset import Item
from artlora.stages.augment import caption_variants
from artlora.stages.augment.caption_variants import caption_generator, tags, variant

CAPTION = "sks style, a tree, ink, paper, mountains, mist, a bird, river, night, moon"


def config(**kwargs) -> AugmentConfig:
    return AugmentConfig(storage_root="s3://test-captions", base_model="unused", **kwargs)


def item(*captions: str, sha256: str = "ab" * 32) -> Item:
    first, *more = captions
    return Item(
        sha256=sha256,
        source="s/x.png",
        file="s3://b/x.png",
        caption=first,
        style="s",
        width=64,
        height=64,
        bucket=(64, 64),
        more_captions=tuple(more),
    )


def test_shuffling_keeps_the_first_tokens_and_permutes_the_rest():
    parts = tags(CAPTION)
    made = [variant(CAPTION, caption_generator(0, "img", 0, k), 2, True, 0.0) for k in range(50)]
    for text in made:
        got = tags(text)
        assert got[:2] == parts[:2], "the first keep_tokens tags stay in place"
        assert sorted(got[2:]) == sorted(parts[2:]), "the others are all there, in some order"
    assert len({tuple(tags(text)[2:]) for text in made}) > 40, "the order of the rest changes from variant to variant"
    assert {
        tags(t)[0] for t in (variant(CAPTION, caption_generator(0, "img", 0, k), 0, True, 0.0) for k in range(20))
    } != {"sks style"}, "with keep_tokens 0 the first tag moves too"


def test_tag_dropout_drops_at_its_rate_and_never_a_kept_tag():
    rate, draws, parts = 0.3, 400, tags(CAPTION)
    kept = dropped = 0
    for k in range(draws):
        got = tags(variant(CAPTION, caption_generator(1, "img", 0, k), 1, False, rate))
        assert got[0] == "sks style"
        assert got[1:] == [tag for tag in parts[1:] if tag in got[1:]], "without shuffling the order is kept"
        kept, dropped = kept + len(got) - 1, dropped + len(parts) - len(got)
    share = dropped / (kept + dropped)  # 3600 Bernoulli draws: standard error 0.008
    assert abs(share - rate) < 0.03, share


def test_variants_are_seeded_distinct_and_cover_every_caption():
    two = item(CAPTION, "sks style, a second caption, with, tags")
    on = config(shuffle_tags=True, keep_tokens=1, caption_variants=4, seed=3)
    made = caption_variants.variants(two, on)
    assert made == caption_variants.variants(two, on), "the same seed and image make the same variants"
    assert len(made) == len(set(made)) <= 8
    assert {tags(text)[1] in tags(CAPTION) for text in made} == {True, False}, "variants of both captions"
    assert made != caption_variants.variants(two, config(shuffle_tags=True, keep_tokens=1, caption_variants=4, seed=4))
    other = caption_variants.variants(item(CAPTION, sha256="cd" * 32), on)
    assert other != caption_variants.variants(item(CAPTION), on), "each image draws its own"
    # Without shuffling or dropout an image's variants are its distinct captions, as ingest wrote them.
    assert caption_variants.variants(item(CAPTION, "b", CAPTION), config()) == [CAPTION, "b"]
    assert caption_variants.settings(config()) == {}, "an index made with the defaults is unchanged"


def test_variant_settings_that_would_do_nothing_are_refused():
    with pytest.raises(ValidationError, match="caption_variants > 1 needs shuffle_tags or tag_dropout"):
        config(caption_variants=3)
    with pytest.raises(ValidationError, match="keep_tokens keeps tags in place"):
        config(keep_tokens=1)
    with pytest.raises(ValidationError, match="tag_dropout"):
        config(tag_dropout=1.0)
