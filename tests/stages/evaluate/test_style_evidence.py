"""The weight-free measures evaluate builds its evidence from: style distances, confusion matrices,
memorisation."""

from __future__ import annotations

import numpy as np
import pytest

from artlora.demo import sample_data
from artlora.stages.evaluate.memorisation import nearest_training_images
from artlora.stages.evaluate.run import OTHER_CONTENT_MOVEMENT, STYLE_MOVEMENT, other_content_movement, style_movement
from artlora.stages.evaluate.sides import Side
from artlora.stages.evaluate.style_distance import StyleDistance, combined, diagonal_minima, scales


def _style_images(style: str, start: int, count: int = 8) -> np.ndarray:
    return np.stack([np.asarray(sample_data.render(style, start + 5 * i, size=64)[0]) for i in range(count)])


@pytest.fixture(scope="module")
def real():
    """Two disjoint sets of each sample style: 'training' and 'held-out'."""
    return (
        [_style_images(s, 0) for s in sample_data.STYLES],
        [_style_images(s, 1000) for s in sample_data.STYLES],
    )


def test_real_images_of_each_style_are_closest_to_their_own_style(real):
    training, heldout = real
    distance = StyleDistance(seed=0)
    matrices = distance.matrices(training, heldout)
    for measure, matrix in matrices.items():
        assert sum(diagonal_minima(matrix)) >= 4, (measure, matrix.round(3))
    assert all(diagonal_minima(combined(matrices, scales(matrices))))


def test_a_set_has_no_distance_to_itself_and_the_measures_are_seeded(real):
    training, _ = real
    a, b = StyleDistance(seed=0), StyleDistance(seed=0)
    same = a.between(a.summary(training[0]), a.summary(training[0]))
    assert same == {"colour": 0.0, "texture": 0.0}
    assert (
        a.matrices(training[:2], training[2:4])["texture"].tolist()
        == b.matrices(training[:2], training[2:4])["texture"].tolist()
    )


def test_images_of_one_style_painted_for_every_style_miss_the_diagonal(real):
    """A model that paints one style whatever the caption says gets at most that style's row right."""
    training, heldout = real
    matrices = StyleDistance().matrices([training[3]] * 5, heldout)
    assert sum(diagonal_minima(combined(matrices, scales(StyleDistance().matrices(training, heldout))))) <= 1


def test_one_style_has_a_unit_and_a_movement_toward_its_own_images(real):
    """With one style there is no other style to measure the unit by: its own real images' distance is the unit
    (before, the unit was NaN and a single style got no distance at all)."""
    training, heldout = real
    distance, style = StyleDistance(), sample_data.STYLES[0]
    reference = distance.matrices(training[:1], heldout[:1])
    unit = scales(reference)
    assert unit == {measure: pytest.approx(float(reference[measure][0, 0])) for measure in reference}
    other = combined(distance.matrices([training[3]], heldout[:1]), unit)  # another style's images
    own = combined(distance.matrices([_style_images(style, 2000)], heldout[:1]), unit)  # new images of the style
    toward = style_movement(other, own, [style])
    assert toward[f"{STYLE_MOVEMENT}/{style}"] == pytest.approx(own[0, 0] / other[0, 0]) and toward[STYLE_MOVEMENT] < 1
    assert style_movement(own, other, [style])[STYLE_MOVEMENT] > 1  # moved away


def _side(distance: StyleDistance, painted: np.ndarray, heldout: np.ndarray, content: np.ndarray) -> Side:
    """One model's side as the run fills it in: its style's images' distances to the held-out images and to the
    base's images of other content."""
    side = Side(loss=None, caption_gap=float("nan"), by_style={}, content=content, grid=[])
    side.matrices = distance.matrices([painted], [heldout])
    side.to_content = distance.matrices([painted], [content])
    return side


def test_other_content_tells_a_move_toward_the_style_from_a_move_toward_anything(real):
    """One style: the base paints another style's look; one LoRA paints the style, another paints the base's other
    content. Both move toward the style's held-out images by the style distance alone; the distance to the base's
    images of other content tells which moved toward the style."""
    training, heldout = real
    distance, style = StyleDistance(), sample_data.STYLES[0]
    unit = scales(distance.matrices(training[:1], heldout[:1]))
    content = training[2]  # the base's images of the content prompts
    base = _side(distance, training[3], heldout[0], content)
    learned = _side(distance, _style_images(style, 2000), heldout[0], content)
    anything = _side(distance, _style_images(sample_data.STYLES[2], 3000), heldout[0], content)

    def measured(lora: Side) -> tuple[float, float]:
        moved = style_movement(combined(base.matrices, unit), combined(lora.matrices, unit), [style])
        toward = other_content_movement(base, lora, unit, [style])
        return moved[f"{STYLE_MOVEMENT}/{style}"], toward[f"{OTHER_CONTENT_MOVEMENT}/{style}"]

    style_ratio, content_ratio = measured(learned)
    assert style_ratio < 1 and style_ratio < content_ratio, (style_ratio, content_ratio)
    style_ratio, content_ratio = measured(anything)
    assert content_ratio < style_ratio, (style_ratio, content_ratio)
    no_content = Side(loss=None, caption_gap=float("nan"), by_style={}, content=np.zeros((0, 64, 64, 3)), grid=[])
    no_content.to_content = distance.matrices([training[3]], [])  # no content prompts: the run's empty columns
    assert other_content_movement(no_content, no_content, unit, [style]) == {}


def test_style_movement_is_the_largest_ratio_and_only_when_every_style_has_one():
    base, lora = np.diag([2.0, 4.0]), np.diag([1.0, 3.0])
    assert style_movement(base, lora, ["a", "b"]) == {
        f"{STYLE_MOVEMENT}/a": 0.5,
        f"{STYLE_MOVEMENT}/b": 0.75,
        STYLE_MOVEMENT: 0.75,
    }
    assert STYLE_MOVEMENT not in style_movement(np.diag([0.0, 4.0]), lora, ["a", "b"])  # no ratio for a


def test_diagonal_minima_reads_rows():
    matrix = np.array([[0.1, 0.5], [0.2, 0.3]])
    assert diagonal_minima(matrix) == [True, False]


def test_a_copy_of_a_training_image_is_flagged_and_a_new_image_is_not(real):
    training, heldout = real
    train = np.concatenate(training)
    copy = train[7].astype(np.int16) + np.random.default_rng(0).integers(-3, 4, train[7].shape)
    painted = np.stack([np.clip(copy, 0, 255).astype(np.uint8), heldout[2][0]])
    # Compared 4 training images at a time: the copy's original is in the second chunk.
    chunks = [train[start : start + 4] for start in range(0, len(train), 4)]
    nearest = nearest_training_images(painted, iter(chunks), pixel_threshold=0.04, hash_bits=6)
    first, second = nearest.matches
    assert nearest.compared == len(train)
    assert first.flagged and first.training == 7 and first.pixel_distance < 0.02 and first.hash_bits <= 6
    assert np.array_equal(first.training_image, train[7])
    assert not second.flagged and second.pixel_distance > 0.04
    at_once = nearest_training_images(painted, [train], pixel_threshold=0.04, hash_bits=6).matches
    assert [(m.training, m.flagged) for m in at_once] == [(first.training, True), (second.training, False)]
