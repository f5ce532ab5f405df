"""unet_tf: the TensorFlow segmentation tutorial's U-Net (MobileNetV2 encoder, pix2pix decoder),
trained with a Dice loss, as a package.

Importing it registers the custom losses and metrics, so a saved `model.keras` loads with
`keras.models.load_model` after `import unet_tf`.

It also keeps TensorFlow quiet: the screen of C++ log lines TensorFlow prints when it starts (on a
CPU machine including "failed call to cuInit", which reads like a failure but is not one) and its
retracing warnings. Set UNET_TF_VERBOSE=1 to see them. Python warnings and errors still show.
"""

import os

__version__ = "0.1.0"


def _quiet_tensorflow() -> None:
    """Imports TensorFlow with its start-up log lines silenced, unless UNET_TF_VERBOSE is set or
    TensorFlow is imported already."""
    import sys

    if os.environ.get("UNET_TF_VERBOSE") or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Some lines are written by C++ before TensorFlow's own log level applies: the standard error
    # stream itself is pointed at /dev/null while TensorFlow loads.
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    tf.get_logger().setLevel("ERROR")  # retracing and other notices of tf.function
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)  # tensorflow-datasets' notices


_quiet_tensorflow()

from unet_tf import losses, metrics  # noqa: E402,F401  (registers the Keras serializables)
from unet_tf.model import build_unet  # noqa: E402,F401
