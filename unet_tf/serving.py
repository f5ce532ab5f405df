"""The exported SavedModel's two signatures, as TensorFlow functions of a model.

- `serving_default(images)`: uint8 [batch, height, width, 3] pixels, any height and width;
- `serve_bytes(images)`: string [batch] of encoded JPEG, PNG or BMP images of one size.

Both return `mask` (int32 [batch, height, width]) and `probabilities` (float32 [batch, height,
width, classes]) through `inference.segment`, the path predict uses too. Memory grows with the
photo: an image above `max_pixels` is refused with an error naming the limit, and `serve_bytes`
reads each image's size from its header first, so an oversized image is refused before it is
decoded. Transparent PNG pixels are composited over white, as `predict` (Pillow) does. GIF, TIFF
and WebP, which predict reads, are not decoded in the graph. A 16-bit PNG is mapped to 8 bits
from the range the run measured on its training photos (`--intensity`, metadata.json
`intensity`), as predict maps it (`images.to_uint8`); a model without one refuses it. (A GIF's header gives the size of its screen, not of its frames, and
TensorFlow decodes every frame: its size cannot be checked before it is decoded.)
"""

from __future__ import annotations

import keras
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from unet_tf.inference import segment

FORMATS = ("JPEG", "PNG", "BMP")
_HEADER = 32  # bytes read to find an image's size


def _uint(bytes_, start, count, big_endian):
    """The unsigned integer in `count` header bytes from `start`, as int64."""
    value = tf.constant(0, tf.int64)
    order = range(count) if big_endian else reversed(range(count))
    for i in order:
        value = value * 256 + tf.cast(bytes_[start + i], tf.int64)
    return value


def header_size(encoded):
    """(height, width) int64 of an encoded image from its first bytes, without decoding it;
    (-1, -1) for a format the graph cannot decode."""
    padded = tf.strings.substr(tf.strings.join([encoded, tf.constant("\0" * _HEADER)]), 0, _HEADER)
    head = tf.io.decode_raw(padded, tf.uint8)

    def starts_with(*values):
        return tf.reduce_all(tf.equal(head[:len(values)], tf.constant(values, tf.uint8)))

    def jpeg():
        shape = tf.image.extract_jpeg_shape(encoded, output_type=tf.int32)
        return tf.cast(shape[:2], tf.int64)

    def png():
        return tf.stack([_uint(head, 20, 4, True), _uint(head, 16, 4, True)])

    def bmp():
        height = _uint(head, 22, 4, False)
        height = tf.where(height >= 2**31, 2**32 - height, height)  # negative: stored top down
        return tf.stack([height, _uint(head, 18, 4, False)])

    def unknown():
        return tf.constant([-1, -1], tf.int64)

    index = tf.where(starts_with(0xFF, 0xD8), 0, tf.where(starts_with(0x89, 0x50, 0x4E, 0x47), 1,
                     tf.where(starts_with(0x42, 0x4D), 2, 3)))
    return tf.switch_case(index, [jpeg, png, bmp, unknown])


def check_pixels(height, width, max_pixels: int):
    """An assertion that fails, naming the limit, for an image above `max_pixels`."""
    pixels = tf.cast(height, tf.int64) * tf.cast(width, tf.int64)
    return tf.debugging.assert_less_equal(
        pixels, tf.constant(max_pixels, tf.int64),
        message=f"image above the limit of {max_pixels:,} pixels (metadata.json max_pixels; "
                "export --max-pixels sets it); resize it first")


def png_bit_depth(encoded):
    """The bits per sample a PNG's header gives (int32), 8 for any other format."""
    head = tf.io.decode_raw(tf.strings.substr(
        tf.strings.join([encoded, tf.constant("\0" * _HEADER)]), 0, _HEADER), tf.uint8)
    is_png = tf.reduce_all(tf.equal(head[:4], tf.constant((0x89, 0x50, 0x4E, 0x47), tf.uint8)))
    return tf.where(is_png, tf.cast(head[24], tf.int32), 8)


def decode(encoded, max_pixels: int, intensity=None):
    """uint8 [H, W, 3] of one encoded image, refused before decoding when it is too large. A
    16-bit PNG is mapped to 8 bits from `intensity` = (low, high), the run's range, as predict
    maps it (`images.to_uint8`); without a range it is refused (predict would stretch it by its
    own percentiles, which a graph does not compute)."""
    size = header_size(encoded)
    known = tf.debugging.assert_non_negative(
        size, message=f"not an image the SavedModel decodes ({', '.join(FORMATS)}); send its "
                      "pixels to serving_default instead")
    checks = [known, check_pixels(size[0], size[1], max_pixels)]
    if intensity is None:
        checks.append(tf.debugging.assert_less_equal(
            png_bit_depth(encoded), 8,
            message="a 16-bit PNG: this model was trained on 8-bit photos and serve_bytes maps "
                    "16-bit ones only with a range the run recorded (metadata.json intensity); "
                    "stretch it to 8 bits as predict does (from its 0.1st to its 99.9th "
                    "percentile to 0..255) and send the pixels to serving_default"))
    with tf.control_dependencies(checks):
        is_png = tf.strings.substr(encoded, 0, 4) == b"\x89PNG"
        is_jpeg = tf.strings.substr(encoded, 0, 3) == b"\xff\xd8\xff"

        def png_over_white():
            if intensity is not None:
                return tf.cond(png_bit_depth(encoded) > 8, deep_png, png8_over_white)
            return png8_over_white()

        def png8_over_white():
            rgba = tf.cast(tf.io.decode_png(encoded, channels=4, dtype=tf.uint8), tf.float32)
            alpha = rgba[..., 3:] / 255.0
            return tf.cast(tf.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)), tf.uint8)

        def deep_png():  # images.read_image's arithmetic, in float64
            rgba = tf.cast(tf.io.decode_png(encoded, channels=4, dtype=tf.uint16), tf.float64)
            alpha = rgba[..., 3:] / 65535.0
            values = rgba[..., :3] * alpha + 65535.0 * (1.0 - alpha)
            low, high = (float(v) for v in intensity)
            scaled = tf.clip_by_value((values - low) / (high - low), 0.0, 1.0) * 255.0
            return tf.cast(tf.round(scaled), tf.uint8)  # half to even, as numpy's rint

        def jpeg():  # the accurate integer DCT, as Pillow decodes: the pixels predict reads
            return tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")

        def other():
            return tf.io.decode_image(encoded, channels=3, expand_animations=False,
                                      dtype=tf.uint8)

        return tf.cond(is_png, png_over_white, lambda: tf.cond(is_jpeg, jpeg, other))


class FrozenModel:
    """A model's inference as one graph with its weights as constants: TensorFlow then folds each
    batch normalization into the convolution before it and fuses the activations, which the
    model's own graph (weights as variables) cannot. Same outputs, a quarter less time per photo
    on a CPU. Called as the model is (`training=False` only), with its input and output shapes."""

    def __init__(self, model: keras.Model):
        self.input_shape, self.output_shape = model.input_shape, model.output_shape
        spec = tf.TensorSpec([None, *model.input_shape[1:]], model.inputs[0].dtype)
        function = tf.function(lambda images: model(images, training=False))
        self._graph = convert_variables_to_constants_v2(function.get_concrete_function(spec))

    def __call__(self, images, training=False):
        if training:
            raise ValueError("a FrozenModel only infers")
        (output,) = self._graph(images)
        return output


def signatures(model: keras.Model, tta: bool, max_pixels: int, policy=None,
               intensity=None) -> tuple:
    """(serving_default, serve_bytes) functions of `model`, to be traced with the input
    signatures `SIGNATURES` gives; photos meet the model as `policy` (data.Policy) says, and
    `serve_bytes` maps 16-bit PNGs from `intensity` (the run's (low, high); None: refused)."""
    model = FrozenModel(model)

    def serving_default(images):
        shape = tf.shape(images)
        with tf.control_dependencies([check_pixels(shape[1], shape[2], max_pixels)]):
            def empty():  # a batch of no images: no work, outputs of the right shapes
                classes = model.output_shape[-1]
                return (tf.zeros([0, shape[1], shape[2]], tf.int32),
                        tf.zeros([0, shape[1], shape[2], classes], tf.float32))

            mask, probabilities = tf.cond(shape[0] > 0,
                                          lambda: segment(model, images, tta, policy), empty)
        return {"mask": mask, "probabilities": probabilities}

    def serve_bytes(images):
        def decode_all():
            return tf.map_fn(lambda encoded: decode(encoded, max_pixels, intensity), images,
                             fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))

        decoded = tf.cond(tf.size(images) > 0, decode_all,
                          lambda: tf.zeros([0, 0, 0, 3], tf.uint8))
        return serving_default(decoded)

    return serving_default, serve_bytes


SIGNATURES = {
    "serving_default": [tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
    "serve_bytes": [tf.TensorSpec([None], tf.string, name="images")],
}
