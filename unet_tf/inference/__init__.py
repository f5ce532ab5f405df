"""From pixels to masks with a trained model.

    segment.py      photos -> class probabilities -> masks, as the run's resize policy fits them
                    to the model (the one path evaluate, predict, previews and the SavedModel share)
    tiling.py       overlapping tiles of the model's size, blended (photos at native resolution)
    postprocess.py  optional clean-up of a predicted mask (holes, specks, the largest object)
"""

from unet_tf.inference import postprocess, tiling
from unet_tf.inference.segment import (
    Policy,
    class_probabilities,
    mirror_mean,
    predict_masks,
    segment,
)

__all__ = ["Policy", "class_probabilities", "mirror_mean", "postprocess", "predict_masks",
           "segment", "tiling"]
