"""Pictures of a run: learning curves, predictions next to the truth, the confusion matrix."""

from __future__ import annotations


import numpy as np
# Figures are drawn with matplotlib's object API, not pyplot: files are written on any machine
# without a display, and a notebook's own plotting backend is left alone.
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from unet_tf.run_files import atomic_path

# One colour per class for masks and overlays (pet, background, border for trimaps).
PALETTE = np.array([
    [230, 80, 60], [40, 40, 60], [250, 210, 70], [70, 160, 230], [120, 200, 120],
    [200, 120, 220], [240, 150, 90], [90, 220, 210], [160, 160, 160], [250, 250, 250],
], dtype=np.uint8)


def colorize(mask: np.ndarray) -> np.ndarray:
    """A class-index mask [H, W] as RGB uint8 [H, W, 3]."""
    return PALETTE[np.asarray(mask) % len(PALETTE)]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45, skip_class=None) -> np.ndarray:
    """The photo with each class tinted in its colour (`skip_class` left untinted)."""
    image = np.asarray(image, np.float32)
    tint = colorize(mask).astype(np.float32)
    weight = np.full(mask.shape + (1,), alpha, np.float32)
    if skip_class is not None:
        weight[mask == skip_class] = 0.0
    return np.clip(image * (1 - weight) + tint * weight, 0, 255).astype(np.uint8)


def _save(fig, path, dpi) -> None:
    """Saves to a temporary name and renames: a crash never leaves half a picture."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)


def plot_curves(history: dict, path, best: int | None = None, averaged=None) -> None:
    """Loss and mean Dice per epoch, train and validation, with the `best` epoch (from 1) marked,
    and `averaged` = (first, last), the epochs whose weights were averaged, shaded."""
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
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    if best and "val_dice" in history:
        axes[1].set_title(f"mean Dice (best validation {history['val_dice'][best - 1]:.3f})")
    fig.tight_layout()
    _save(fig, path, dpi=100)


def plot_predictions(images, true_masks, predicted_masks, class_names, path, titles=None) -> None:
    """Rows of image / true mask / predicted mask."""
    rows = len(images)
    fig = Figure(figsize=(9, 3 * rows))
    axes = fig.subplots(rows, 3, squeeze=False)
    for i in range(rows):
        panels = (images[i], colorize(true_masks[i]), colorize(predicted_masks[i]))
        for ax, panel, title in zip(axes[i], panels, ("image", "true mask", "predicted mask")):
            ax.imshow(panel)
            ax.set_title(title if titles is None or title != "image" else titles[i], fontsize=9)
            ax.axis("off")
    handles = [Patch(color=colorize(np.array([c]))[0] / 255, label=name)
               for c, name in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=len(class_names))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _save(fig, path, dpi=90)


def plot_confusion(cm, class_names, path) -> None:
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
    _save(fig, path, dpi=100)
