"""Pictures of a run: learning curves, predictions next to the truth, the confusion matrix."""

from __future__ import annotations

import colorsys

import numpy as np

# Figures are drawn with matplotlib's object API, not pyplot: files are written on any machine
# without a display, and a notebook's own plotting backend is left alone.
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from unet_tf.files import atomic_path

# Colours go by a class's role, not its index: class 1 is the object in a binary model but the
# background in the trimap, so a palette indexed by class would paint the object of every binary
# model in the trimap background's colour.
BACKGROUND = "background"
# The class named "background" in mask pictures: a neutral dark grey that sets off every object
# colour (overlays leave it untinted: the photo itself is the background).
BACKGROUND_COLOR = np.array([40, 40, 40], dtype=np.uint8)
# Every other class, in class order: bright, saturated colours that are easy to tell apart and
# stand out on dark photos too (the most distinct come first, for the usual one or two objects).
BRIGHT = np.array([
    [240, 60, 50],    # red
    [250, 225, 40],   # yellow
    [40, 150, 255],   # blue
    [60, 210, 80],    # green
    [225, 60, 225],   # magenta
    [40, 230, 230],   # cyan
    [255, 150, 20],   # orange
    [150, 100, 255],  # violet
    [180, 245, 60],   # lime
    [255, 140, 180],  # pink
], dtype=np.uint8)


def _bright(k: int) -> np.ndarray:
    """The k-th object colour: the palette, then further hues spread by the golden ratio (so that
    models with more classes than the palette still get a distinct colour for each)."""
    if k < len(BRIGHT):
        return BRIGHT[k]
    hue = (k - len(BRIGHT)) * 0.618033988749895 % 1.0
    value = 1.0 if (k - len(BRIGHT)) % 2 == 0 else 0.8
    return np.array([round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.75, value)], np.uint8)


def _unnamed(count: int) -> tuple:
    """Names for a model whose names are unknown: index classes, none of them the background."""
    return tuple(f"class_{i}" for i in range(count))


def class_colors(class_names) -> np.ndarray:
    """The colour of each class, uint8 [C, 3]: the class named "background" neutral dark grey,
    every other class the next bright colour in class order (with no class named "background",
    every class is bright)."""
    colors, k = [], 0
    for name in class_names:
        if name == BACKGROUND:
            colors.append(BACKGROUND_COLOR)
        else:
            colors.append(_bright(k))
            k += 1
    return np.array(colors, np.uint8).reshape(len(colors), 3)


def _color_table(class_names, mask) -> np.ndarray:
    """`class_colors`, extended with further bright colours for labels past the named classes, so
    a stray label is drawn in a colour of its own rather than failing or borrowing one."""
    mask = np.asarray(mask)
    colors = class_colors(class_names)
    needed = int(mask.max()) + 1 if mask.size else 0
    if needed > len(colors):
        start = sum(name != BACKGROUND for name in class_names)
        extra = [_bright(start + i) for i in range(needed - len(colors))]
        colors = np.concatenate([colors, np.array(extra, np.uint8)])
    return colors


def mask_palette(class_names, mask=None) -> np.ndarray:
    """The palette of a saved mask, uint8 [C, 3]: each class in its overlay colour, the class
    named "background" black (labels past the named classes in `mask` get colours of their own)."""
    colors = _color_table(class_names, np.zeros(0, np.uint8) if mask is None else mask).copy()
    colors[[i for i, name in enumerate(class_names) if name == BACKGROUND]] = 0
    return colors


def classes_table(class_names) -> list:
    """[{"index", "name", "color"}] per class, the colour as "#rrggbb" (`mask_palette`'s): what
    classes.json and an export's metadata.json record, so that any program draws the same."""
    return [{"index": i, "name": name, "color": "#{:02x}{:02x}{:02x}".format(*color)}
            for i, (name, color) in enumerate(zip(class_names, mask_palette(class_names)))]


def legend_strip(class_names, width: int) -> np.ndarray:
    """A strip, uint8 [h, width, 3], naming the colour of every class but the background (which
    overlays leave untinted), wrapped onto as many lines as `width` needs."""
    size = int(np.clip(width // 40, 10, 18))
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: its small bitmap font
        font = ImageFont.load_default()
    items = [(name, tuple(int(c) for c in color))
             for name, color in zip(class_names, class_colors(class_names)) if name != BACKGROUND]
    pad, box = max(2, size // 3), size
    lines, x = [[]], pad
    for name, color in items:  # lay out left to right, a new line where the next would not fit
        step = box + pad + int(np.ceil(font.getlength(name))) + 2 * pad
        if lines[-1] and x + step > width:
            lines.append([])
            x = pad
        lines[-1].append((x, name, color))
        x += step
    height = len(lines) * (box + pad) + pad
    strip = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for row, line in enumerate(lines):
        y = pad + row * (box + pad)
        for x, name, color in line:
            draw.rectangle([x, y, x + box - 1, y + box - 1], fill=color, outline=(0, 0, 0))
            draw.text((x + box + pad, y + box // 2), name, fill=(0, 0, 0), font=font, anchor="lm")
    return np.asarray(strip)


def overlay_with_legend(image: np.ndarray, mask: np.ndarray, class_names) -> np.ndarray:
    """`overlay` with `legend_strip` underneath: what predict writes as <stem>_overlay.png."""
    tinted = overlay(image, mask, class_names)
    return np.concatenate([tinted, legend_strip(class_names, tinted.shape[1])])


# The error map's colours: missed objects, objects where there are none, one object class taken
# for another. Chosen apart from each other on a grey photo, not from the class colours.
MISSED = np.array([0, 170, 255], np.uint8)         # false negative: blue
FALSE_OBJECT = np.array([255, 40, 200], np.uint8)  # false positive: magenta
WRONG_CLASS = np.array([255, 200, 0], np.uint8)    # an object class for another: amber


def error_map(image: np.ndarray, true_mask: np.ndarray, predicted_mask: np.ndarray,
              class_names) -> np.ndarray:
    """The photo in dimmed grey with its wrong pixels coloured, uint8 [H, W, 3]: an object missed
    (truth an object, predicted background) in `MISSED`, an object where there is none in
    `FALSE_OBJECT`, one object class predicted for another in `WRONG_CLASS`. Without a class named
    "background" every wrong pixel is `WRONG_CLASS`."""
    grey = np.asarray(image, np.float32).mean(axis=-1, keepdims=True) * 0.55 + 40
    picture = np.repeat(np.clip(grey, 0, 255), 3, axis=-1).astype(np.uint8)
    true_mask, predicted_mask = np.asarray(true_mask), np.asarray(predicted_mask)
    wrong = true_mask != predicted_mask
    picture[wrong] = WRONG_CLASS
    if BACKGROUND in class_names:
        background = list(class_names).index(BACKGROUND)
        picture[wrong & (predicted_mask == background)] = MISSED
        picture[wrong & (true_mask == background)] = FALSE_OBJECT
    return picture


def error_legend() -> list:
    """The legend entries of `error_map`."""
    return [Patch(color=MISSED / 255, label="missed (false negative)"),
            Patch(color=FALSE_OBJECT / 255, label="object where there is none (false positive)"),
            Patch(color=WRONG_CLASS / 255, label="wrong object class")]


def worst_figure(images, true_masks, predicted_masks, class_names, titles) -> Figure:
    """Rows of photo / true mask / predicted mask / error map, each row titled (`titles`: the
    file and its score), with the class colours and the error colours in the legend."""
    rows = [(image, colorize(true, class_names), colorize(predicted, class_names),
             error_map(image, true, predicted, class_names))
            for image, true, predicted in zip(images, true_masks, predicted_masks)]
    names = [(title, "true mask", "predicted mask", "errors") for title in titles]
    return panels_figure(rows, names, class_names, extra_legend=error_legend())


def plot_worst(images, true_masks, predicted_masks, class_names, titles, path) -> None:
    """`worst_figure`, saved to `path`."""
    _save(worst_figure(images, true_masks, predicted_masks, class_names, titles), path, dpi=80)


def colorize(mask: np.ndarray, class_names=None) -> np.ndarray:
    """A class-index mask [H, W] as RGB uint8 [H, W, 3], in the colours of `class_colors`.
    Without `class_names` the classes count as unnamed (all bright): pass the names, so that the
    background is drawn as background."""
    mask = np.asarray(mask)
    if class_names is None:
        class_names = _unnamed(int(mask.max()) + 1 if mask.size else 0)
    return _color_table(class_names, mask)[mask]


def overlay(image: np.ndarray, mask: np.ndarray, class_names=None, alpha: float = 0.45,
            skip_class=None) -> np.ndarray:
    """The photo with each class tinted in its colour, the class named "background" left as it
    is (the photo shows it better than any tint), and `skip_class`, an index, left untinted too.
    Without `class_names`, `skip_class` (if any) takes the background's role and the other
    classes count as unnamed."""
    mask = np.asarray(mask)
    if class_names is None:
        count = max(int(mask.max()) + 1 if mask.size else 0,
                    skip_class + 1 if skip_class is not None else 0)
        class_names = tuple(BACKGROUND if i == skip_class else name
                            for i, name in enumerate(_unnamed(count)))
    image = np.asarray(image, np.float32)
    colors = _color_table(class_names, mask)
    tint = colors[mask].astype(np.float32)
    untinted = np.array([name == BACKGROUND for name in class_names]
                        + [False] * (len(colors) - len(class_names)))
    if skip_class is not None and 0 <= skip_class < len(untinted):
        untinted[skip_class] = True
    weight = np.where(untinted[mask], 0.0, alpha).astype(np.float32)[..., None]
    return np.clip(image * (1 - weight) + tint * weight, 0, 255).astype(np.uint8)


def _save(fig, path, dpi) -> None:
    """Saves to a temporary name and renames: a crash never leaves half a picture."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)


# The note on the curves, and in the summary, of a run whose best epoch is its last.
STILL_IMPROVING = "still improving: more epochs may help"


def plot_curves(history: dict, path, best: int | None = None, averaged=None,
                class_names=None) -> None:
    """`curves_figure`, saved to `path`."""
    _save(curves_figure(history, best, averaged, class_names), path, dpi=100)


def curves_figure(history: dict, best: int | None = None, averaged=None,
                  class_names=None) -> Figure:
    """Loss, mean Dice and each class's Dice per epoch, with the `best` epoch (from 1) marked,
    and `averaged` = (first, last), the epochs whose weights were averaged, shaded. Loss and mean
    Dice show train and validation; the classes' panel shows validation (train without one), in
    the order and colours of `class_names` when given. When the best epoch is the last one, a
    note says that training was still improving. Epochs are whole numbers on the axis."""
    epochs = np.arange(1, len(history["loss"]) + 1)
    prefix, which, names = _class_dice_columns(history, class_names)
    panels = [("loss", "loss"), ("dice", "mean Dice")]
    if names:
        panels.append(("per class", f"Dice per class ({which})"))
    fig = Figure(figsize=(5.5 * len(panels), 4))
    axes = fig.subplots(1, len(panels))
    colors = ({name: color / 255 for name, color in zip(class_names, class_colors(class_names))}
              if class_names is not None else {})
    for ax, (key, title) in zip(axes, panels):
        if key == "per class":
            lines = [(history[prefix + name], "-", name, colors.get(name)) for name in names]
        else:
            lines = [(history[split + key], style, "validation" if split else "train", None)
                     for split, style in (("", "-"), ("val_", "--")) if split + key in history]
        for values, style, label, color in lines:
            ax.plot(epochs, values, style, marker="o", markersize=3, label=label, color=color)
        if best:
            ax.axvline(best, color="grey", linestyle=":", label=f"best epoch ({best})")
        if averaged:
            ax.axvspan(averaged[0], averaged[1], color="tab:green", alpha=0.12,
                       label=f"weights averaged ({averaged[0]}-{averaged[1]})")
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, len(epochs) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    if best and "val_dice" in history:
        axes[1].set_title(f"mean Dice (best validation {history['val_dice'][best - 1]:.3f})")
    if best and best == len(epochs):
        fig.suptitle(f"the best epoch is the last one: {STILL_IMPROVING}", color="tab:red")
    fig.tight_layout()
    return fig


def _class_dice_columns(history: dict, class_names=None) -> tuple:
    """(column prefix, "validation" or "train", class names) of the per-class Dice in `history`:
    validation's when it has them, else training's; the classes in `class_names`' order when
    given, else in the history's. No names: the history has no per-class Dice."""
    for prefix, which in (("val_dice_", "validation"), ("dice_", "train")):
        found = [key[len(prefix):] for key in history if key.startswith(prefix)]
        if found:
            order = list(class_names or ())
            return prefix, which, sorted(found, key=lambda name: (
                order.index(name) if name in order else len(order)))
    return None, None, []


def spread(length: int, count: int) -> np.ndarray:
    """Up to `count` indices spread evenly over `length` examples, the first and last included:
    which photos of a split to show."""
    return np.linspace(0, length - 1, min(count, length)).astype(int)


def panels_figure(rows, titles, class_names, extra_legend=()) -> Figure:
    """A figure of rows of RGB pictures side by side, each with its title (`titles`: one list
    per row), and a legend of the class colours (and `extra_legend`'s patches) underneath, if
    there are any."""
    fig = Figure(figsize=(3 * max(len(row) for row in rows), 3 * len(rows)))
    axes = fig.subplots(len(rows), max(len(row) for row in rows), squeeze=False)
    for row_axes, row, row_titles in zip(axes, rows, titles):
        for ax, panel, title in zip(row_axes, row, row_titles):
            ax.imshow(panel)
            ax.set_title(title, fontsize=9)
        for ax in row_axes:
            ax.axis("off")
    handles = [Patch(color=color / 255, label=name)
               for color, name in zip(class_colors(class_names), class_names)]
    handles += list(extra_legend)
    if not handles:  # e.g. outlined objects: no class colours to name
        fig.tight_layout()
        return fig
    fig.legend(handles=handles, loc="lower center",
               ncol=min(len(handles), max(len(row) for row in rows) + 1), fontsize=8)
    fig.tight_layout(rect=(0, 0.1 / len(rows) ** 0.5, 1, 1))
    return fig


def predictions_figure(images, true_masks, predicted_masks, class_names, titles=None) -> Figure:
    """Rows of image / true mask / predicted mask, classes coloured by role (`class_colors`);
    `titles` name the images (default: "image")."""
    return panels_figure(
        [(image, colorize(true, class_names), colorize(predicted, class_names))
         for image, true, predicted in zip(images, true_masks, predicted_masks)],
        [(titles[i] if titles is not None else "image", "true mask", "predicted mask")
         for i in range(len(images))], class_names)


def plot_predictions(images, true_masks, predicted_masks, class_names, path, titles=None) -> None:
    """`predictions_figure`, saved to `path`."""
    _save(predictions_figure(images, true_masks, predicted_masks, class_names, titles), path,
          dpi=90)


def plot_confusion(cm, class_names, path) -> None:
    """`confusion_figure`, saved to `path`."""
    _save(confusion_figure(cm, class_names), path, dpi=100)


def confusion_figure(cm, class_names) -> Figure:
    """The confusion matrix, each row normalized to the share of that true class's pixels."""
    cm = np.asarray(cm, np.float64)
    shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(1.6 * len(class_names) + 2, 1.4 * len(class_names) + 1.5))
    ax = fig.subplots()
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), share in np.ndenumerate(shares):
        ax.text(j, i, f"{share:.1%}\n{int(cm[i, j]):,}", ha="center", va="center", fontsize=8,
                color="white" if share > 0.5 else "black")
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (row-normalized)")
    fig.tight_layout()
    return fig


def instance_color(labels) -> np.ndarray:
    """The outline colour of each object id, uint8 [..., 3]: the bright palette (BRIGHT) in id
    order, cycling (objects 1, 2, ... get red, yellow, ...; ids that follow each other always
    differ); id 0 (background) black."""
    labels = np.asarray(labels)
    colors = BRIGHT[(np.maximum(labels, 1) - 1) % len(BRIGHT)]
    colors[labels == 0] = 0
    return colors


def instance_outlines(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The photo (uint8 [H, W, 3]) with each object of `labels` (int [H, W], 0 background)
    outlined in its own colour (`instance_color`): the object's own pixels along its edge, so
    touching objects show both outlines side by side (the image's edge is no outline). Lines are
    1 pixel wide, 1 more per 600 pixels of the photo's shorter side."""
    from scipy import ndimage

    labels = np.asarray(labels)
    width = 1 + min(labels.shape) // 600  # outline width in pixels
    # A pixel of an object is outline when another id lies within `width` pixels (a square).
    highest = ndimage.maximum_filter(labels, size=2 * width + 1, mode="nearest")
    lowest = ndimage.minimum_filter(labels, size=2 * width + 1, mode="nearest")
    edges = (labels != 0) & (highest != lowest)
    result = np.array(image, dtype=np.uint8, copy=True)
    result[edges] = instance_color(labels[edges])
    return result
