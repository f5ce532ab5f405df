"""unet_tf: the TensorFlow segmentation tutorial's U-Net (MobileNetV2 encoder, pix2pix decoder),
trained with a Dice loss, as a package.

Importing it registers the custom losses and metrics, so a saved `model.keras` loads with
`keras.models.load_model` after `import unet_tf`.
"""

from unet_tf import losses, metrics  # noqa: F401  (registers the Keras serializables)
from unet_tf.model import build_unet  # noqa: F401

__version__ = "0.1.0"
