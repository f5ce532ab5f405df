"""plots: classes are coloured by role (the class named "background" untinted, every object bright
and distinct), whatever index the model gives them."""

import itertools

import numpy as np
import pytest

from unet_tf import plots

TRIMAP = ("pet", "background", "border")
BINARY_MODELS = (("background", "pet"), ("background", "foreground"))
DARK = 10  # a dark photo: every channel of every pixel


def _is_bright(color) -> bool:
    """Bright and saturated: a strong channel, and far from grey."""
    color = np.asarray(color, int)
    return color.max() >= 180 and color.max() - color.min() >= 80


def _dark_image(shape=(4, 6)):
    return np.full(shape + (3,), DARK, np.uint8)


def _left_right_mask(left, right, shape=(4, 6)):
    mask = np.full(shape, left, np.uint8)
    mask[:, shape[1] // 2:] = right
    return mask


@pytest.mark.parametrize("class_names", BINARY_MODELS)
def test_binary_object_is_bright_and_stands_out_on_a_dark_photo(class_names):
    colors = plots.class_colors(class_names)
    assert colors.dtype == np.uint8 and colors.shape == (2, 3)
    assert _is_bright(colors[1])
    assert list(colors[0]) == [40, 40, 40]  # the background: neutral dark grey in mask pictures

    image = _dark_image()
    mask = _left_right_mask(0, 1)
    out = plots.overlay(image, mask, class_names)
    assert out.dtype == np.uint8 and out.shape == image.shape
    # background pixels: exactly the photo
    np.testing.assert_array_equal(out[mask == 0], image[mask == 0])
    # object pixels: clearly tinted (the navy of the old palette gave 0.45 * (30+30+50)/3 = 16.5)
    difference = np.abs(out[mask == 1].astype(int) - image[mask == 1].astype(int)).mean()
    assert difference > 40


@pytest.mark.parametrize("class_names", BINARY_MODELS)
def test_binary_mask_picture_draws_background_grey_and_object_bright(class_names):
    picture = plots.colorize(_left_right_mask(0, 1), class_names)
    assert picture.dtype == np.uint8 and picture.shape == (4, 6, 3)
    np.testing.assert_array_equal(picture[:, :3], np.full((4, 3, 3), 40))
    assert all(_is_bright(px) for px in picture[:, 3:].reshape(-1, 3))


def test_overlay_blends_the_class_colour_by_alpha():
    """Hand-computed: a pixel of 10 under a colour c at alpha 0.5 becomes floor((10 + c) / 2);
    at alpha 1 it becomes c."""
    color = plots.class_colors(("background", "pet"))[1].astype(int)
    mask = _left_right_mask(0, 1)
    half = plots.overlay(_dark_image(), mask, ("background", "pet"), alpha=0.5)
    np.testing.assert_array_equal(half[0, 5], (DARK + color) // 2)
    full = plots.overlay(_dark_image(), mask, ("background", "pet"), alpha=1.0)
    np.testing.assert_array_equal(full[0, 5], color)
    np.testing.assert_array_equal(full[0, 0], [DARK] * 3)


def test_trimap_leaves_background_untinted_and_tints_pet_and_border_apart():
    colors = plots.class_colors(TRIMAP)
    pet, background, border = colors
    assert _is_bright(pet) and _is_bright(border)
    assert np.abs(pet.astype(int) - border.astype(int)).sum() >= 100
    assert background[0] == background[1] == background[2]  # neutral grey

    image = _dark_image((3, 3))
    mask = np.array([[0, 1, 2]] * 3, np.uint8)
    out = plots.overlay(image, mask, TRIMAP)
    np.testing.assert_array_equal(out[:, 1], image[:, 1])
    for column in (0, 2):
        assert np.abs(out[:, column].astype(int) - DARK).mean() > 40
    assert not np.array_equal(out[0, 0], out[0, 2])


@pytest.mark.parametrize("class_names", [("sky", "road", "car"),
                                         tuple(f"class_{i}" for i in range(5))])
def test_index_classes_without_background_are_all_tinted_in_distinct_colours(class_names):
    colors = plots.class_colors(class_names)
    assert len({tuple(c) for c in colors}) == len(class_names)
    assert all(_is_bright(c) for c in colors)

    count = len(class_names)
    image = _dark_image((2, count))
    mask = np.array([list(range(count))] * 2, np.uint8)
    out = plots.overlay(image, mask, class_names)
    for column in range(count):  # class 0 too: nothing is background
        assert np.abs(out[:, column].astype(int) - DARK).mean() > 40


@pytest.mark.parametrize("count", range(1, 11))
@pytest.mark.parametrize("with_background", [False, True])
def test_every_class_colour_is_distinct_up_to_ten_classes(count, with_background):
    names = [f"class_{i}" for i in range(count)]
    if with_background:
        names[count // 2] = "background"
    colors = plots.class_colors(names).astype(int)
    assert colors.shape == (count, 3)
    for a, b in itertools.combinations(range(count), 2):
        assert np.abs(colors[a] - colors[b]).sum() >= 80, (names[a], names[b])


def test_colors_past_the_palette_stay_distinct():
    colors = plots.class_colors([f"c{i}" for i in range(24)])
    assert len({tuple(c) for c in colors}) == 24


def test_colorize_without_names_still_works_and_matches_unnamed_classes():
    mask = np.array([[0, 1], [2, 3]], np.uint8)
    picture = plots.colorize(mask)
    assert picture.shape == (2, 2, 3) and picture.dtype == np.uint8
    expected = plots.class_colors([f"class_{i}" for i in range(4)])
    np.testing.assert_array_equal(picture.reshape(4, 3), expected)


def test_overlay_keeps_the_old_skip_class_call():
    """predict's call: overlay(image, mask, skip_class=background), without names."""
    image = _dark_image()
    mask = _left_right_mask(1, 0)  # a trimap's background (1) on the left, pet (0) on the right
    out = plots.overlay(image, mask, skip_class=1)
    np.testing.assert_array_equal(out[mask == 1], image[mask == 1])
    assert np.abs(out[mask == 0].astype(int) - DARK).mean() > 40
    # with the names too, skip_class adds an index to leave untinted
    both = plots.overlay(image, _left_right_mask(0, 2), TRIMAP, skip_class=2)
    np.testing.assert_array_equal(both[:, 3:], image[:, 3:])


def test_plot_predictions_writes_a_png_with_legend_in_class_colours(tmp_path, monkeypatch):
    figures = []
    save = plots._save

    def keep(fig, path, dpi):
        figures.append(fig)
        save(fig, path, dpi)

    monkeypatch.setattr(plots, "_save", keep)
    images = np.full((2, 8, 8, 3), 30, np.uint8)
    true_masks = np.zeros((2, 8, 8), np.uint8)
    true_masks[:, 2:6, 2:6] = 1
    predicted = np.zeros((2, 8, 8), np.uint8)
    predicted[:, 3:7, 3:7] = 1
    path = tmp_path / "predictions.png"
    plots.plot_predictions(images, true_masks, predicted, ("background", "pet"), path,
                           titles=["a", "b"])

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (fig,) = figures
    handles = fig.legends[0].legend_handles
    assert [h.get_label() for h in handles] == ["background", "pet"]
    legend = np.array([np.round(np.array(h.get_facecolor()[:3]) * 255) for h in handles])
    np.testing.assert_array_equal(legend, plots.class_colors(("background", "pet")))
    np.testing.assert_array_equal(legend[0], [40, 40, 40])
    assert _is_bright(legend[1])
    # the mask panels are in the same colours: the true mask's object pixel is the pet colour
    true_panel = fig.axes[1].get_images()[0].get_array()
    np.testing.assert_array_equal(true_panel[3, 3], legend[1])
    np.testing.assert_array_equal(true_panel[0, 0], [40, 40, 40])


@pytest.mark.parametrize("epochs", [1, 2, 7, 40])
def test_curves_count_whole_epochs(epochs):
    history = {key: list(np.linspace(1, 0.5, epochs)) for key in ("loss", "val_loss")}
    history.update({key: list(np.linspace(0.2, 0.8, epochs)) for key in ("dice", "val_dice")})
    figure = plots.curves_figure(history, best=epochs)
    figure.canvas.draw()  # the ticks as they are drawn
    for ax in figure.axes:
        lo, hi = ax.get_xlim()
        shown = [tick for tick in ax.get_xticks() if lo <= tick <= hi]
        assert shown and all(float(tick).is_integer() for tick in shown), (epochs, shown)
