"""Reading image and mask files as they come in the wild, with Pillow.

Photographs arrive as JPEG (RGB, grayscale or CMYK), PNG (RGB, RGBA, palette, 16-bit), GIF, BMP,
often under the wrong extension: the file's content decides, never its name. A photo (or mask)
with an EXIF orientation is turned upright first, as viewers and labelling tools show it, so a
mask drawn on what the photo shows fits it. Every reader returns a uint8 array or raises
`ImageReadError` naming the file and the reason.
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


def read_image(path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The first frame of an image file as uint8 RGB [height, width, 3]."""
    image = _open(path, max_pixels)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: keep the top 8 bits instead of letting convert() clip at 255.
        values = np.asarray(image, dtype=np.uint32)
        values = (values >> 8) if values.max() > 255 else values
        return np.repeat(values.astype(np.uint8)[..., None], 3, axis=-1)
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
