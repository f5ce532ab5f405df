"""Clean-up of predicted masks, on the pet region (pet and border classes together).

Steps, applied in this order when named in `--postprocess` (comma-separated):

- `islands`: drop pet components smaller than `MIN_ISLAND_SHARE` of the image (to background);
- `largest`: keep only the largest pet component (to background elsewhere): one pet per photo;
- `fill`:    background holes enclosed by the pet become pet.

`none` (or an empty string) changes nothing. The default, `auto`, is `largest,fill` for models
trained on oxford_iiit_pet (one pet per photo: on the real sample's test split it raised binary pet
Dice by up to 0.004 for each of four models, see docs/small-data.md) and `none` for every other model,
whose masks may hold several objects that `largest` would delete.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from unet_tf.errors import UserError

STEPS = ("islands", "largest", "fill")


class PostprocessError(UserError):
    """A --postprocess value that cannot be applied."""

MIN_ISLAND_SHARE = 0.005
DEFAULT = "auto"
# What `auto` means, by the dataset the model was trained on.
AUTO = {"oxford_iiit_pet": ("largest", "fill")}


def parse(spec: str) -> tuple:
    """'largest,fill' -> ('largest', 'fill'), in the canonical order; 'none' -> ()."""
    names = [s.strip() for s in (spec or "").split(",") if s.strip() and s.strip() != "none"]
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        raise PostprocessError(f"--postprocess {spec!r}: unknown step(s) {', '.join(unknown)}; "
                         f"expected auto, none or a comma-separated list of {', '.join(STEPS)}")
    return tuple(s for s in STEPS if s in names)


def add_argument(parser) -> None:
    """The `--postprocess` option of `predict` and `evaluate`."""
    parser.add_argument("--postprocess", default=DEFAULT,
                        help=f"auto, none or a comma-separated list of {', '.join(STEPS)} "
                             "(default: auto = largest,fill for models trained on "
                             "oxford_iiit_pet, none otherwise)")


def resolve(spec: str, trained_on: str | None) -> tuple:
    """The steps of `spec` for a model trained on the dataset `trained_on` ('auto' depends on it)."""
    if (spec or "").strip() == "auto":
        return AUTO.get(trained_on, ())
    return parse(spec)


def check(spec: str) -> str:
    """`spec` if it is `auto` or parses (else PostprocessError): to reject a typo before a model
    loads."""
    resolve(spec, trained_on=None)
    return spec


def steps_for(spec: str, trained_on: str | None, class_names) -> tuple:
    """The steps of `spec` for a model trained on `trained_on` with these classes; an error, once
    and before any image, when steps are asked of a model without a background class."""
    steps = resolve(spec, trained_on)
    if steps and "background" not in class_names:
        raise PostprocessError(f"--postprocess {spec}: the model's classes {tuple(class_names)} "
                               "have no 'background', which the steps need; use --postprocess "
                               "none")
    return steps


def pet_classes(class_names) -> tuple:
    """Indices of the classes that make up the pet region (every class but background)."""
    return tuple(i for i, name in enumerate(class_names) if name != "background")


def postprocess(mask: np.ndarray, class_names, steps) -> np.ndarray:
    """A cleaned copy of one class-index mask [H, W]."""
    steps = parse(steps) if isinstance(steps, str) else tuple(steps)
    if not steps:
        return mask
    if "background" not in class_names:
        raise ValueError(f"post-processing needs a 'background' class; classes are {class_names}")
    background = list(class_names).index("background")
    fill_class = list(class_names).index("pet") if "pet" in class_names else pet_classes(class_names)[0]
    mask = np.array(mask, copy=True)
    pet = np.isin(mask, pet_classes(class_names))
    if "islands" in steps or "largest" in steps:
        labels, count = ndimage.label(pet)
        if count:
            sizes = ndimage.sum(pet, labels, index=np.arange(1, count + 1))
            keep = np.zeros(count + 1, bool)
            if "islands" in steps:
                keep[1:] = sizes >= MIN_ISLAND_SHARE * mask.size
            else:
                keep[1:] = True
            if "largest" in steps:
                largest = np.zeros(count + 1, bool)
                largest[1 + int(np.argmax(sizes))] = True
                keep &= largest
            drop = pet & ~keep[labels]
            mask[drop] = background
            pet &= ~drop
    if "fill" in steps:
        holes = ndimage.binary_fill_holes(pet) & ~pet
        mask[holes] = fill_class
    return mask
