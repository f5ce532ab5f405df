"""Data: sources that all end in the same in-memory `Split`, and one preprocessing path.

    >>> from unet_tf.config import preset
    >>> from unet_tf import data
    >>> config = preset("quickstart")
    >>> train, val = data.load_splits(config)
    >>> batches = data.make_dataset(train.images, train.masks, config.batch_size, training=True)
"""

from unet_tf.data import geometry, policy
from unet_tf.data.decoding import choose_intensity, choose_resize
from unet_tf.data.policy import Policy, background_class
from unet_tf.data.preprocess import (
    augment_batch,
    make_dataset,
    normalize,
    resize_image,
    resize_mask,
    trimap_to_classes,
)
from unet_tf.data.sources import (
    DataError,
    DataUnavailableError,
    Split,
    ensure_available,
    example_groups,
    groups_line,
    list_files,
    load_split,
    load_splits,
    parse_split,
    planned_sizes,
)


def summary(split: Split, class_names) -> str:
    """A few lines on a split: examples, files skipped and why, pixel share per class."""
    shares = ", ".join(f"{name} {share:.1%}"
                       for name, share in zip(class_names, split.class_shares(len(class_names))))
    lines = [f"{split.name}: {len(split)} examples; pixels: {shares}"]
    if split.skipped:
        lines.append(f"  skipped {len(split.skipped)}:")
        lines += [f"    {name}: {reason}" for name, reason in split.skipped]
    for note in sorted({note for _, note in split.notes}):
        names = [name for name, n in split.notes if n == note]
        lines.append(f"  warning: {len(names)} file(s) used as {note} (save masks as PNG to keep "
                     f"them exact): {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}")
    return "\n".join(lines)


__all__ = ["DataError", "DataUnavailableError", "Policy", "Split", "augment_batch", "background_class",
           "choose_intensity", "choose_resize", "ensure_available", "example_groups", "geometry", "groups_line", "policy", "list_files", "load_split", "load_splits",
           "make_dataset", "normalize", "parse_split", "planned_sizes", "resize_image", "resize_mask", "summary",
           "trimap_to_classes"]
