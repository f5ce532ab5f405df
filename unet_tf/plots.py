"""Pictures of a run: learning curves, predictions next to the truth, the confusion matrix."""

from __future__ import annotations

import colorsys

import numpy as np

# Figures are drawn with matplotlib's object API, not pyplot: files are written on any machine
# without a display, and a notebook's own plotting backend is left alone.
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

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


def plot_curves(history: dict, path, best: int | None = None, averaged=None) -> None:
    """`curves_figure`, saved to `path`."""
    _save(curves_figure(history, best, averaged), path, dpi=100)


def curves_figure(history: dict, best: int | None = None, averaged=None) -> Figure:
    """Loss and mean Dice per epoch, train and validation, with the `best` epoch (from 1) marked,
    and `averaged` = (first, last), the epochs whose weights were averaged, shaded. Epochs are
    whole numbers on the axis."""
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "dice", "mean Dice")):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], style, marker="o", markersize=3,
                        label=("validation" if prefix else "train"))
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
    fig.tight_layout()
    return fig


def panels_figure(rows, titles, class_names) -> Figure:
    """A figure of rows of RGB pictures side by side, each with its title (`titles`: one list
    per row), and a legend of the class colours underneath."""
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
    fig.legend(handles=handles, loc="lower center", ncol=len(class_names))
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
