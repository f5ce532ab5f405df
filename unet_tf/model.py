"""The U-Net: a MobileNetV2 encoder and a decoder of pix2pix upsample blocks.

    >>> from unet_tf.model import build_unet
    >>> model = build_unet(input_size=96, num_classes=3, encoder_weights=None)
    >>> model.output_shape
    (None, 96, 96, 3)

The model takes float images in [0, 1] (what `unet_tf.data` yields) and returns per-pixel logits at
the input resolution.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

from unet_tf.config import DEFAULT_DECODER_FILTERS, IMAGENET_ALPHAS
from unet_tf.errors import UserError

# MobileNetV2 layers whose outputs feed the decoder, with the share of the input side each carries
# (at 128 px: 64, 32, 16, 8 and 4 pixels). The last one is the bottleneck.
SKIP_LAYERS = (
    ("block_1_expand_relu", 1 / 2),
    ("block_3_expand_relu", 1 / 4),
    ("block_6_expand_relu", 1 / 8),
    ("block_13_expand_relu", 1 / 16),
    ("block_16_project", 1 / 32),
)
# Keras ships ImageNet MobileNetV2 weights for these input sides only (and IMAGENET_ALPHAS).
IMAGENET_SIDES = (96, 128, 160, 192, 224)
# From random weights the encoder's BatchNorm statistics must follow the weights as they change:
# with Keras' 0.999 the moving averages lag so far behind that validation (which uses them)
# predicted "background" everywhere for 15 epochs, where 0.9 learned.
SCRATCH_BN_MOMENTUM = 0.9


class WeightsUnavailableError(UserError):
    """The encoder weights asked for cannot be had: not downloadable, not a file, or not
    MobileNetV2's."""


def imagenet_weights_file(alpha: float, input_size: int) -> str:
    """The file name under which Keras caches MobileNetV2 ImageNet weights (no classifier)."""
    side = input_size if input_size in IMAGENET_SIDES else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{side}_no_top.h5"


def upsample_block(filters: int, dropout: float = 0.0, name: str | None = None) -> keras.Sequential:
    """pix2pix upsampling: transposed 3x3 convolution at stride 2, BatchNorm, Dropout, ReLU."""
    layers = [
        keras.layers.Conv2DTranspose(
            filters, 3, strides=2, padding="same", use_bias=False,
            kernel_initializer=keras.initializers.RandomNormal(0.0, 0.02),
        ),
        keras.layers.BatchNormalization(),
    ]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.ReLU())
    return keras.Sequential(layers, name=name)


def build_encoder(input_size: int, encoder_weights: str | None = "imagenet", alpha: float = 1.0,
                  bn_momentum: float | None = None) -> keras.Model:
    """MobileNetV2 without its classifier, returning the SKIP_LAYERS outputs (finest first).

    Args:
        input_size: int. Side of the square input, a multiple of 32.
        encoder_weights: str or None. "imagenet", None (random), or a path to a MobileNetV2 `.h5`.
        alpha: float. MobileNetV2 width multiplier.
        bn_momentum: float or None. BatchNorm momentum of every encoder layer; None keeps Keras'
            0.999 for ImageNet weights and uses SCRATCH_BN_MOMENTUM otherwise.
    """
    weights = _resolve_weights(encoder_weights, alpha, input_size)
    try:
        base = keras.applications.MobileNetV2(
            input_shape=(input_size, input_size, 3), include_top=False, weights=weights,
            alpha=alpha) if weights is not None else None
    except Exception as error:  # Keras raises a bare Exception when the download fails
        if weights != "imagenet":
            raise WeightsUnavailableError(
                f"--encoder-weights {weights}: not MobileNetV2 weights for alpha {alpha} without "
                f"the classifier ({type(error).__name__}: {str(error)[:200]}); give such a file "
                "(.h5), imagenet, or none") from None
        name = imagenet_weights_file(alpha, input_size)
        folder = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
        raise WeightsUnavailableError(
            f"could not download the ImageNet MobileNetV2 weights ({error}).\n"
            f"  Offline, put the file {name} into {folder}/ (Keras looks there first), or pass a "
            "local copy with --encoder-weights PATH, or train from random weights with "
            "--encoder-weights none."
        ) from None
    # The encoder takes any input size (multiples of 32), so that a model trained on patches
    # predicts on larger inputs; its weights are those loaded at `input_size` (ImageNet's differ
    # by training size).
    flexible = keras.applications.MobileNetV2(input_shape=(None, None, 3), include_top=False,
                                              weights=None, alpha=alpha)
    if weights is not None:
        flexible.set_weights(base.get_weights())
    base = flexible
    if bn_momentum is None and weights is None:
        bn_momentum = SCRATCH_BN_MOMENTUM
    if bn_momentum is not None:
        for layer in batch_norm_layers(base):
            layer.momentum = bn_momentum
    outputs = [base.get_layer(name).output for name, _ in SKIP_LAYERS]
    return keras.Model(base.input, outputs, name="encoder")


def _resolve_weights(encoder_weights, alpha, input_size):
    if encoder_weights is None or str(encoder_weights).lower() == "none":
        return None
    if encoder_weights == "imagenet":
        if alpha not in IMAGENET_ALPHAS:
            raise WeightsUnavailableError(
                f"alpha={alpha} has no ImageNet weights; use one of {IMAGENET_ALPHAS} or "
                "encoder_weights=None"
            )
        return "imagenet"
    path = Path(encoder_weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"encoder_weights={encoder_weights!r}: no such file; expected 'imagenet', 'none' or "
            "the path to a MobileNetV2 weights file (.h5) without the classifier"
        )
    return str(path)


def build_unet(input_size: int = 128, num_classes: int = 3, encoder_weights: str | None = "imagenet",
               freeze_encoder: bool | None = None, alpha: float = 1.0,
               decoder_filters=DEFAULT_DECODER_FILTERS, dropout: float = 0.0,
               encoder_bn_momentum: float | None = None) -> keras.Model:
    """The tutorial's U-Net as a functional `keras.Model` giving logits at the input resolution.

    Args:
        input_size: int. Side of the square input image; a multiple of 32, at least 32.
        num_classes: int. Number of output channels (classes).
        encoder_weights: str or None. "imagenet", None (random) or a path to a MobileNetV2 `.h5`.
        freeze_encoder: bool or None. Keep the encoder's weights fixed; None freezes exactly when
            the encoder is pretrained, since random encoder weights must train.
        alpha: float. MobileNetV2 width multiplier.
        decoder_filters: four ints. Filters of the upsample blocks, coarsest first.
        dropout: float. Dropout rate inside each upsample block (0 disables it).
        encoder_bn_momentum: float or None. See `build_encoder`.

    Example:
        >>> model = build_unet(96, num_classes=2, encoder_weights=None, alpha=0.35)
        >>> model.predict(np.zeros((1, 96, 96, 3))).shape
        (1, 96, 96, 2)
    """
    if not isinstance(input_size, int) or input_size < 32 or input_size % 32:
        raise ValueError(
            f"input_size={input_size!r}: expected a multiple of 32 that is at least 32 (the encoder "
            "halves the image five times), e.g. 96, 128 or 224"
        )
    if len(decoder_filters) != len(SKIP_LAYERS) - 1:
        raise ValueError(
            f"decoder_filters={tuple(decoder_filters)}: expected {len(SKIP_LAYERS) - 1} values, "
            "one per upsampling step from 1/32 to 1/2 of the input"
        )
    encoder = build_encoder(input_size, encoder_weights, alpha, encoder_bn_momentum)
    if freeze_encoder is None:
        freeze_encoder = _resolve_weights(encoder_weights, alpha, input_size) is not None
    encoder.trainable = not freeze_encoder

    inputs = keras.Input((input_size, input_size, 3), name="image")
    # MobileNetV2 (and its ImageNet weights) expect pixels in [-1, 1]; the data is in [0, 1].
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")(inputs)
    *skips, x = encoder(x)
    for filters, skip in zip(decoder_filters, reversed(skips)):
        x = upsample_block(filters, dropout, name=f"up_{skip.shape[1]}_{filters}")(x)
        x = keras.layers.Concatenate()([x, skip])
    # float32 logits even under mixed precision, so softmax and the losses stay accurate.
    logits = keras.layers.Conv2DTranspose(num_classes, 3, strides=2, padding="same",
                                          name="logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name="unet")


def all_layers(model: keras.Model):
    """Every layer of a model, those of nested models included (not the nested models)."""
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from all_layers(layer)
        else:
            yield layer


def flexible_twin(model: keras.Model) -> keras.Model:
    """The same U-Net (the same layers and weights) taking inputs of any size that is a multiple
    of 32: what trains on patches while `model`, at its fixed size, is saved and served."""
    return keras.models.clone_model(model, input_tensors=keras.Input((None, None, 3),
                                                                     name="image"),
                                    clone_function=lambda layer: layer)


def batch_norm_layers(model: keras.Model):
    """Every BatchNormalization layer of a model, nested models included."""
    return (layer for layer in all_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization))


def set_encoder_trainable(model: keras.Model, trainable: bool,
                          batch_norm_trainable: bool = False) -> None:
    """Freezes or unfreezes the encoder of a `build_unet` model (recompile afterwards).

    Unfreezing a pretrained encoder keeps its BatchNorm layers frozen by default: frozen, Keras
    runs them in inference mode, so the ImageNet statistics are not replaced by those of small
    batches while the other weights fine-tune.
    """
    encoder = model.get_layer("encoder")
    encoder.trainable = trainable
    if trainable:
        for layer in batch_norm_layers(encoder):
            layer.trainable = batch_norm_trainable
