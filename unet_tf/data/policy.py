"""How photos meet the model (`--resize`), as one object: the run's plan makes it, and storing
photos, fitting them (eager and in graph ops), the model's input size and tiling at prediction all
ask it. The only place the option's words are interpreted.

    squash  resized to size x size: the aspect ratio is lost (the tutorial's way);
    pad     resized so the longer side is `size`, centred on a square of zeros (its mask on the
            background class): the aspect is kept, and prediction crops the answer back;
    none    kept at native resolution, times `scale`: training takes random `patch` crops,
            validation and prediction cover the photo with `size` tiles overlapping by `overlap`;
    auto    one of squash and none, chosen from how wide the objects in the masks are, once, when
            the run is planned (`decoding.choose_resize`); a Policy is never auto.

    >>> policy = Policy.from_config(config)
    >>> image, mask = policy.fit(photo, mask)            # as a split stores it (numpy)
    >>> fitted, crop_back = policy.fitted_photos(images)  # a batch meeting the model
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from unet_tf.data import geometry

SQUASH, PAD, NATIVE, AUTO = "squash", "pad", "none", "auto"


def is_chosen(config) -> bool:
    """Whether `config`'s resize is settled (anything but auto, which the plan settles)."""
    return config.resize != AUTO


def background_class(config) -> int:
    """The class padding and crops treat as background: the one named so, else class 0."""
    names = config.class_names
    return names.index("background") if "background" in names else 0


@dataclasses.dataclass(frozen=True)
class Policy:
    """How photos meet a model: `resize` (squash, pad or none), the model's input side `size`,
    and for none the `scale` applied first and the prediction tiles' `overlap`; `patch`, the side
    of training crops (0: whole photos); `background`, the class padding gets."""

    resize: str = SQUASH
    size: int = 128
    scale: float = 1.0
    overlap: float = 0.25
    patch: int = 0
    background: int = 0

    # What a served model's metadata.json records of it: how a photo meets the model.
    PREDICTION_FIELDS = ("resize", "size", "scale", "overlap")

    def __post_init__(self):
        if self.resize not in (SQUASH, PAD, NATIVE):
            raise ValueError(f"resize {self.resize!r}: a policy is squash, pad or none (auto is "
                             "chosen from the masks when the run is planned)")

    @classmethod
    def from_config(cls, config, size: int | None = None) -> "Policy":
        """The policy of a configuration whose resize is chosen (`size`: the model's, when known
        from the model itself)."""
        return cls(config.resize, size or config.model_size, config.scale, config.tile_overlap,
                   config.patch_size, background_class(config))

    @classmethod
    def from_dict(cls, values: dict) -> "Policy":
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.PREDICTION_FIELDS}

    @property
    def native(self) -> bool:
        """Photos stay at their own size (times `scale`): a split holds them as a list, training
        crops them and prediction tiles them."""
        return self.resize == NATIVE

    @property
    def stored_side(self) -> int | None:
        """The side of every stored photo (fitted to the model's square), or None (any size)."""
        return None if self.native else self.size

    @property
    def trains_on_smaller_crops(self) -> bool:
        """Training on `patch` crops of photos fitted to a larger model input (squash, pad):
        `fit` then trains a twin of the model that takes any input size."""
        return not self.native and 0 < self.patch < self.size

    def for_stored_photos(self) -> "Policy":
        """The policy for photos as a split holds them: those of none are scaled already."""
        return dataclasses.replace(self, scale=1.0)

    def fit(self, image, mask) -> tuple:
        """uint8 (image, mask) numpy arrays as a split stores them (see `fit_graph`)."""
        if self.resize == SQUASH:  # the common case in one graph call
            image, mask = geometry.resize_example(image, mask, self.size)
            return image.numpy(), mask.numpy()
        image, mask = self.fit_graph(tf.convert_to_tensor(image), tf.convert_to_tensor(mask))
        return np.asarray(image, np.uint8), np.asarray(mask, np.uint8)

    def fit_graph(self, image, mask) -> tuple:
        """uint8 (image [H, W, 3], mask [H, W]) fitted in graph ops: squashed or padded to the
        model's square, or at native resolution times `scale`."""
        if self.resize == SQUASH:
            return geometry.resize_image(image, self.size), geometry.resize_mask(mask, self.size)
        if self.resize == PAD:
            return geometry.letterbox(image, mask, self.size, self.background)
        return geometry.rescale(image, mask, self.scale)

    def scaled_photos(self, images):
        """uint8 photos [B, H, W, 3] times `scale` (those the tiles of none cover)."""
        if self.scale == 1.0:
            return images
        return tf.map_fn(lambda image: geometry.rescale(image, None, self.scale)[0], images,
                         fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))

    def fitted_shape(self, height: int, width: int) -> tuple:
        """(height, width) of a photo of this size once fitted (before a pad's padding), as
        `fit_graph` computes it (in float32)."""
        if self.resize == SQUASH:
            return self.size, self.size
        shape = np.array([height, width], np.float32)
        if self.resize == PAD:  # geometry.letterbox_box's
            scaled = shape * (np.float32(self.size) / shape.max())
            return tuple(int(max(v, 1)) for v in np.round(scaled))
        if self.scale == 1.0:
            return height, width
        return tuple(int(max(v, 1)) for v in np.round(shape * np.float32(self.scale)))

    def fitted_photos(self, images) -> tuple:
        """(uint8 [B, size, size, 3], crop_back) for squash and pad: the photos fitted to the
        model, and the function that takes the model's answer back to the photos' frame (before
        it is resized to their size)."""
        if self.resize == PAD:
            height, width = tf.shape(images)[1], tf.shape(images)[2]
            top, left, new_height, new_width = geometry.letterbox_box(height, width, self.size)
            fitted = tf.map_fn(lambda image: geometry.letterbox(image, None, self.size, 0)[0],
                               images, fn_output_signature=tf.TensorSpec([None, None, 3],
                                                                         tf.uint8))
            return fitted, lambda answer: answer[:, top:top + new_height, left:left + new_width]
        return geometry.resize_image(images, self.size), lambda answer: answer
