"""--epoch-previews: a validation photo's mask after every epoch, written to the run folder and
shown in place in a notebook, its pet Dice the same as numpy's."""

from unittest import mock

import numpy as np
import pytest

from unet_tf import images as image_io
from unet_tf.data import normalize
from unet_tf.inference import Policy
from unet_tf.model import build_unet
from unet_tf.previews import EpochPreview


def test_a_run_with_epoch_previews_draws_one_per_epoch(tiny_run):
    previews = sorted(p.name for p in (tiny_run / "previews").iterdir())
    assert previews == ["epoch_001.png"]
    picture = image_io.read_image(tiny_run / "previews" / "epoch_001.png")
    assert picture.shape[0] > 100 and picture.shape[1] > 300  # photo, truth, prediction in a row


def _numpy_pet_dice(true, predicted, background):
    """Pet (every class but background) against background, of one photo."""
    t, p = true != background, predicted != background
    return 2 * (t & p).sum() / (t.sum() + p.sum()) if t.sum() + p.sum() else 1.0


def test_each_epoch_scores_the_photo_as_numpy_does_and_writes_its_picture(tmp_path,
                                                                       tiny_model_kwargs):
    model = build_unet(input_size=64, num_classes=3, **tiny_model_kwargs)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:40, 20:50], mask[40:, :] = 1, 2
    preview = EpochPreview("photo_1", image, mask, ("pet", "background", "border"),
                           Policy(size=64), tmp_path / "previews", show=False)
    preview.set_model(model)
    preview.on_epoch_end(0)
    model.get_layer("logits").bias.assign([3.0, 0.0, 0.0])  # the model changes between epochs
    preview.on_epoch_end(1)

    predicted = np.argmax(model(normalize(image[None])).numpy()[0], axis=-1)
    assert preview.scores[1] == pytest.approx(_numpy_pet_dice(mask, predicted, 1), rel=1e-12)
    assert preview.scores[0] != preview.scores[1]  # each epoch predicts anew
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == [
        "epoch_001.png", "epoch_002.png"]


def test_in_a_notebook_one_picture_is_updated_in_place(tiny_model_kwargs):
    model = build_unet(input_size=32, num_classes=2, **tiny_model_kwargs)
    image, mask = np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.uint8)
    preview = EpochPreview("photo", image, mask, ("background", "pet"), Policy(size=32),
                           show=True)
    preview.set_model(model)
    with mock.patch("IPython.display.display") as display:
        for epoch in range(3):
            preview.on_epoch_end(epoch)
    assert display.call_count == 1 and display.call_args.kwargs == {"display_id": True}
    assert display.return_value.update.call_count == 2
    shown = display.return_value.update.call_args.args[0]
    assert shown.data[:8] == b"\x89PNG\r\n\x1a\n"
