"""Mask post-processing on hand-made masks (trimap classes: 0 pet, 1 background, 2 border)."""

import numpy as np
import pytest

from unet_tf.inference.postprocess import check, parse, postprocess, resolve

TRIMAP = ("pet", "background", "border")
B = 1  # background in trimap order

# A 10x10 image: a big pet (with a background hole and a border ring piece) and a 1-pixel island.
MASK = np.full((10, 10), B, np.uint8)
MASK[1:6, 1:6] = 0
MASK[3, 3] = B          # a hole inside the pet
MASK[1:6, 6] = 2        # border pixels touching the pet: part of the same component
MASK[8, 8] = 0          # an island


def test_parse_orders_and_validates():
    assert parse("fill,largest") == ("largest", "fill")
    assert parse("none") == () and parse("") == ()
    with pytest.raises(ValueError, match="unknown step"):
        parse("largest,blur")


def test_auto_depends_on_the_training_dataset():
    assert resolve("auto", "oxford_iiit_pet") == ("largest", "fill")
    assert resolve("auto", "folder") == () and resolve("auto", "synthetic") == ()
    assert resolve("auto", None) == ()
    assert resolve("fill", "folder") == ("fill",) and resolve("none", "oxford_iiit_pet") == ()
    assert check("auto") == "auto"
    with pytest.raises(ValueError, match="expected auto, none"):
        check("biggest")


def test_largest_keeps_one_component_and_its_border():
    out = postprocess(MASK, TRIMAP, "largest")
    assert out[8, 8] == B
    assert np.all(out[1:6, 6] == 2)
    assert out[3, 3] == B  # holes untouched
    assert np.sum(out != MASK) == 1


def test_fill_turns_enclosed_background_into_pet():
    out = postprocess(MASK, TRIMAP, "fill")
    assert out[3, 3] == 0
    assert np.sum(out != MASK) == 1


def test_islands_drop_components_below_share():
    # 1 pixel of 100 is 1% of the image: above the 0.5% threshold, so it stays...
    assert postprocess(MASK, TRIMAP, "islands")[8, 8] == 0
    # ...but in a 20x20 image (0.25%) it goes.
    big = np.full((20, 20), B, np.uint8)
    big[2:12, 2:12] = 0
    big[18, 18] = 0
    out = postprocess(big, TRIMAP, "islands")
    assert out[18, 18] == B and np.all(out[2:12, 2:12] == 0)


def test_binary_classes_and_none():
    binary = (MASK != B).astype(np.uint8)  # background 0, pet 1
    out = postprocess(binary, ("background", "pet"), "largest,fill")
    assert out[8, 8] == 0 and out[3, 3] == 1
    assert postprocess(MASK, TRIMAP, "none") is MASK
