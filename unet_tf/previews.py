"""A look at the model after every epoch, as the tutorial's `DisplayCallback` gives: one photo, its
true mask and the mask the model predicts now, with the photo's Dice (`evaluation.photo_score`).

    python -m unet_tf.train --preset quickstart --epoch-previews   # runs/RUN/previews/epoch_001.png, ...

`train` adds `EpochPreview` when the configuration says `epoch_previews`. Each epoch's picture is
written to `previews/epoch_NNN.png` in the run folder; in a notebook (an IPython kernel) it is
also shown under the running cell, one picture updated in place, so the progress bars stay.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import keras
import numpy as np

from unet_tf import plots
from unet_tf.evaluation import photo_score
from unet_tf.inference import Policy, segment
from unet_tf.files import atomic_write_bytes


class EpochPreview(keras.callbacks.Callback):
    """After every epoch, predicts `image` with the model in training and draws it beside its
    true mask.

    Args:
        name: str. The photo's name, in the picture's title.
        image: uint8 [H, W, 3]. The photo, as the split holds it (fitted to the model, or at its
            native size for `--resize none`).
        mask: uint8 [H, W]. Its true class indices.
        class_names: the model's classes, in output order.
        policy: data.Policy. How the photo meets the model.
        folder: Path or None. Where `epoch_NNN.png` go (None: nowhere).
        show: bool or None. Show each picture in the notebook; None: exactly when running in an
            IPython kernel.
    """

    def __init__(self, name: str, image, mask, class_names, policy: Policy,
                 folder: Path | None = None, show: bool | None = None):
        super().__init__()
        self.name, self.image, self.mask = name, image, np.asarray(mask)
        self.class_names, self.policy = tuple(class_names), policy
        self.folder = Path(folder) if folder is not None else None
        self.show = "ipykernel" in sys.modules if show is None else show
        self.scores = []  # the photo's mean Dice after each epoch
        self._handle = None

    def on_epoch_end(self, epoch, logs=None):
        # Eager: a traced function would be traced again every epoch.
        predicted = segment(self.model, self.image[None], policy=self.policy)[0][0].numpy()
        what, score = photo_score(self.mask, predicted, self.class_names)
        self.scores.append(score)
        figure = plots.predictions_figure([self.image], [self.mask], [predicted],
                                          self.class_names, titles=[self.name])
        figure.suptitle(f"epoch {epoch + 1}: {what} {score:.3f} on this photo")
        figure.tight_layout(rect=(0, 0.1, 1, 1))
        png = io.BytesIO()
        figure.savefig(png, format="png", dpi=72)
        if self.folder is not None:
            self.folder.mkdir(exist_ok=True)
            atomic_write_bytes(self.folder / f"epoch_{epoch + 1:03d}.png", png.getvalue())
        if self.show:
            self._display(png.getvalue())

    def _display(self, png: bytes) -> None:
        from IPython.display import Image, display

        if self._handle is None:
            self._handle = display(Image(data=png), display_id=True)
        else:
            self._handle.update(Image(data=png))
