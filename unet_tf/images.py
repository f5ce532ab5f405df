"""Reading image and mask files as they come in the wild, with Pillow.

Photographs arrive as JPEG (RGB, grayscale or CMYK), PNG (RGB, RGBA, palette, 16-bit), GIF, BMP,
often under the wrong extension: the file's content decides, never its name. A photo (or mask)
with an EXIF orientation is turned upright first, as viewers and labelling tools show it, so a
mask drawn on what the photo shows fits it. Every reader returns a uint8 array or raises
`ImageReadError` naming the file and the reason. A photo with more than 8 bits a channel
(microscopy, scientific cameras) is stretched to 8 bits by `to_uint8`, the one rule training,
evaluation and predict share.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from unet_tf.errors import UserError
from unet_tf.files import atomic_path

# Above this many pixels an image is refused before it is decoded: a 10000 x 10000 "photo" is more
# likely a decompression bomb than a pet, and segmenting it would take gigabytes (predict needs
# about 40 bytes a pixel: 1.6 GB at this limit, 0.5 GB for a 12-megapixel photo).
MAX_PIXELS = 40_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(UserError):
    """A file that is not a readable image (or mask); the message names the file and the reason."""


EXIF_ORIENTATION = 0x0112


def orientation(image) -> int:
    """The EXIF orientation of an open image (1: stored upright; 6: turned 90 degrees, ...)."""
    try:
        value = int(image.getexif().get(EXIF_ORIENTATION, 1))
    except (ValueError, TypeError, OSError, SyntaxError):
        return 1
    return value if 2 <= value <= 8 else 1  # 0 and other values outside the standard: as stored


def _open(path, max_pixels: int):
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageReadError(
                    f"{path}: {width}x{height} pixels is above the limit of {max_pixels:,} "
                    "(a decompression bomb, or an image far larger than a photograph); resize it "
                    "first"
                )
            image.load()
            if orientation(image) != 1:  # turned upright, as viewers and labelling tools show it
                image = ImageOps.exif_transpose(image)
            return image
    except ImageReadError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"{path}: {error}") from None
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's ways of saying "not an image"
        raise ImageReadError(f"{path}: not a readable image ({error})") from None


# Pillow's modes of a single-channel photo with more than 8 bits: 16-bit, 32-bit int, float.
DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# The percentiles of a deep photo's values that become 0 and 255 (as cellpose and StarDist
# normalise fluorescence images, per image).
LOW_PERCENTILE, HIGH_PERCENTILE = 0.1, 99.9


def to_uint8(array, intensity=None) -> np.ndarray:
    """A photo's pixels as uint8, the one rule every path (training, evaluation, predict, the
    export's `serve_bytes`) uses.

    uint8 comes back unchanged (the same array). Any other dtype (16-bit, 32-bit, float: more
    than 8 bits a channel) is stretched linearly from `intensity` = (low, high), the range a run
    measured on its training photos (`--intensity`): low becomes 0 and high 255, clipped outside,
    rounded to the nearest integer: `rint(clip((v - low) / (high - low), 0, 1) * 255)`, in
    float64. Without a range, each photo is stretched by its own 0.1st and 99.9th percentiles,
    taken over all the values of the array together (every channel of an RGB photo at once, so
    that its colour balance is kept); an empty field then has its noise stretched into texture,
    which is why runs record a range. A constant image (low == high) gives zeros; values that are
    not finite (NaN, inf in a float TIFF) are left out of the percentiles and give 0."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        sample = values[finite]
        values = np.where(finite, values, 0.0)
    else:
        sample = values
    if intensity is not None:
        low, high = (float(v) for v in intensity)
    elif sample.size == 0:
        return np.zeros(array.shape, np.uint8)
    else:
        low, high = np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if not high > low:
        return np.zeros(array.shape, np.uint8)
    stretched = np.rint(np.clip((values - low) / (high - low), 0.0, 1.0) * 255.0)
    stretched[~finite] = 0
    return stretched.astype(np.uint8)


def intensity_range(photos) -> tuple | None:
    """(low, high): the 0.1st and 99.9th percentiles of the values of `photos` (arrays with more
    than 8 bits a channel, `deep_values`) pooled, each photo weighing the same (at most 2**16 of
    its values, evenly spaced, are taken); None without any such photo. What `--intensity auto`
    records for a run."""
    samples = []
    for values in photos:
        flat = np.asarray(values, np.float64).reshape(-1)
        flat = flat[np.isfinite(flat)]
        if flat.size:
            samples.append(flat[np.linspace(0, flat.size - 1, min(flat.size, 2**16)).astype(int)])
    if not samples:
        return None
    low, high = np.percentile(np.concatenate(samples), [LOW_PERCENTILE, HIGH_PERCENTILE])
    return float(low), float(high)


def parse_intensity(text: str) -> tuple | None:
    """The (low, high) of an `--intensity` value "LOW,HIGH"; None for auto (not yet measured: no
    photo of the run had more than 8 bits) and per-image. Raises ValueError for anything else."""
    if text in ("auto", "per-image"):
        return None
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"--intensity {text!r}: expected auto, per-image or LOW,HIGH")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise ValueError(f"--intensity {text!r}: LOW,HIGH are numbers") from None
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ValueError(f"--intensity {text!r}: LOW,HIGH needs finite numbers with HIGH > LOW")
    return low, high


def png_bit_depth(path) -> int | None:
    """The bits a channel of a PNG file (1, 2, 4, 8 or 16) from its header, or None for a file
    that is not a PNG."""
    try:
        with open(path, "rb") as file:
            head = file.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24]


def _tiff_bits(image) -> int:
    """The most bits a sample of an open TIFF (8 for any other format)."""
    tags = getattr(image, "tag_v2", None)
    if tags is None:
        return 8
    bits = tags.get(258, 8)  # BitsPerSample
    return max(bits) if isinstance(bits, tuple) else int(bits)


_TRANSPOSES = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
               6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_90}  # as ImageOps.exif_transpose turns them


def _deep_colour(path, image) -> np.ndarray | None:
    """The full-depth pixels [H, W, C] of a colour (or grey + alpha) photo with more than 8 bits
    a channel that Pillow reads truncated to 8 (16-bit RGB/RGBA/grey-alpha PNG, 16-bit colour
    TIFF), upright and without alpha (composited over white); None for any other photo."""
    if image.mode in DEEP_MODES:
        return None
    with Image.open(path) as raw:
        depth = png_bit_depth(path) if raw.format == "PNG" else None
        tiff_bits = _tiff_bits(raw) if raw.format == "TIFF" else 8
        turn = orientation(raw)
    if depth == 16:
        import tensorflow as tf  # the one decoder here that keeps 16-bit colour PNG values

        values = tf.io.decode_png(Path(path).read_bytes(), channels=0, dtype=tf.uint16).numpy()
    elif tiff_bits > 8:
        import tifffile  # installed with scikit-image

        values = np.asarray(tifffile.imread(path, key=0))
        if values.ndim == 3 and values.shape[0] in (2, 3, 4) and values.shape[-1] > 4:
            values = np.moveaxis(values, 0, -1)  # stored plane by plane
    else:
        return None
    if values.ndim == 2:
        values = values[..., None]
    if turn != 1:
        values = np.stack([np.asarray(Image.fromarray(values[..., c].astype(np.float32))
                                      .transpose(_TRANSPOSES[turn])).astype(values.dtype)
                           for c in range(values.shape[-1])], axis=-1)
    if values.shape[-1] in (2, 4):  # alpha: over white, as viewers show it
        white = (np.iinfo(values.dtype).max if np.issubdtype(values.dtype, np.integer)
                 else 1.0)
        alpha = values[..., -1:].astype(np.float64) / white
        values = values[..., :-1].astype(np.float64) * alpha + white * (1.0 - alpha)
    return values


def deep_values(path, max_pixels: int = MAX_PIXELS) -> np.ndarray | None:
    """The values of a photo with more than 8 bits a channel as stored ([H, W] grey, [H, W, C]
    colour, upright, alpha composited over white), or None for an 8-bit photo."""
    image = _open(path, max_pixels)
    if image.mode in DEEP_MODES:
        return np.asarray(image)
    return _deep_colour(path, image)


def read_image(path, max_pixels: int = MAX_PIXELS, intensity=None) -> np.ndarray:
    """The first frame of an image file as uint8 RGB [height, width, 3].

    8-bit photos are read as Pillow reads them, unchanged. A photo with more than 8 bits a
    channel (16-bit grey or colour PNG, 16-bit, 32-bit or float TIFF: microscopy often stores
    12-bit camera values 0..4095 in 16 bits) is mapped to 8 bits by `to_uint8`: linearly from
    `intensity` = (low, high), the range the run recorded, or without one from the photo's own
    0.1st and 99.9th percentiles. Training, evaluation and predict read every photo through
    here, so they see the same pixels."""
    image = _open(path, max_pixels)
    if image.mode in DEEP_MODES:
        grey = to_uint8(np.asarray(image), intensity)
        return np.repeat(grey[..., None], 3, axis=-1)
    deep = _deep_colour(path, image)
    if deep is not None:
        pixels = to_uint8(deep, intensity)
        return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels[..., :3]
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels over white, as a viewer would show them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_mask(path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A label map as uint8 [height, width]: palette indices as stored, not their colours."""
    return _label_map(_open(path, max_pixels), path)


def _label_map(image, path) -> np.ndarray:
    if image.mode in ("P", "L"):
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.int64)
        if values.max() > 255:
            raise ImageReadError(f"{path}: mask values up to {values.max()}, expected at most 255")
        return values.astype(np.uint8)
    if image.mode == "1":
        return np.asarray(image, dtype=np.uint8)
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if not (np.array_equal(array[..., 0], array[..., 1])
            and np.array_equal(array[..., 0], array[..., 2])):
        raise ImageReadError(
            f"{path}: a colour ({image.mode}) mask; expected one class index per pixel "
            "(a grayscale or palette PNG)"
        )
    return array[..., 0]


def read_label_mask(path, colors=None, max_pixels: int = MAX_PIXELS) -> tuple:
    """(mask uint8 [height, width], note): class indices from a mask file as it comes.

    - `colors` (a list of RGB triples, one per class): a colour-coded mask, each pixel's colour
      looked up; an unknown colour is an error naming it;
    - a single-channel JPEG: lossy compression blurs its values, so it is thresholded at 128 into
      0/255, and the note says so;
    - otherwise as `read_mask` (palette indices as stored, grey levels as values).
    """
    if colors is not None:
        array = np.asarray(_open(path, max_pixels).convert("RGB"), dtype=np.uint8)
        codes = (array[..., 0].astype(np.int64) << 16) | (array[..., 1].astype(np.int64) << 8) \
            | array[..., 2]
        known = np.array([(r << 16) | (g << 8) | b for r, g, b in colors], np.int64)
        mask = np.full(codes.shape, 255, np.uint8)
        for index, code in enumerate(known):
            mask[codes == code] = index
        unknown = np.unique(codes[mask == 255])
        if unknown.size:
            shown = ", ".join(f"{c >> 16},{(c >> 8) & 255},{c & 255}" for c in unknown[:5])
            raise ImageReadError(f"{path}: colours {shown} are not in --mask-colors")
        return mask, None
    image = _open(path, max_pixels)
    if image.format == "JPEG" and image.mode == "L":
        return (np.asarray(image, np.uint8) >= 128).astype(np.uint8) * 255, \
            "a JPEG mask, thresholded at 128"
    return _label_map(image, path), None


def write_png(path, array: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Writes through a temporary file: a failure never leaves half a picture at `path`. With
    `palette` (uint8 [C, 3]), `array` is a label map saved as a palette PNG: its pixel values stay
    the labels (what programs read), viewers show each label in its palette colour."""
    image = Image.fromarray(np.asarray(array, dtype=np.uint8))
    if palette is not None:
        image.putpalette(np.asarray(palette, np.uint8).reshape(-1).tobytes())  # "L" becomes "P"
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


MAX_LABEL = 65535  # the highest id a 16-bit label PNG holds


def write_label_png(path, labels: np.ndarray) -> None:
    """Writes an instance (label) image, ints [H, W] from 0 to 65535, as a 16-bit grayscale PNG
    (Pillow's mode "I;16"; it reads back as the same values), through a temporary file."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels {labels.dtype} {labels.shape}: expected an int image [H, W]")
    if labels.size and (labels.min() < 0 or labels.max() > MAX_LABEL):
        raise ValueError(f"labels from {labels.min()} to {labels.max()}: a 16-bit PNG holds "
                         f"0 to {MAX_LABEL}")
    image = Image.fromarray(labels.astype(np.uint16))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
