"""Objects, not just pixels: touching objects separated from class probabilities, and predicted
objects scored against true ones.

    >>> target = boundary_target(instances)              # train a 3-class model on this
    >>> labels = separate(probabilities, min_size=min_object_size(training_instances))
    >>> scores = object_scores(true_instances, labels)   # scores["f1"], scores["pq"], scores["ap"]

An instance (label) image is an int array [H, W]: 0 is background, each object has its own id.

Classes. A 3-class model for separation predicts background 0, interior 1, boundary 2 (the order
`boundary_target` writes; pass `background`, `interior`, `boundary` for another order). The
project's binary models (labels binary, and folder datasets) order their classes (background, pet)
or (background, foreground): background 0, object 1, the defaults here. Its trimap models order
them (pet, background, border): for those pass `interior=0, background=1, boundary=2`.

Matching. A predicted and a true object match at threshold t when their IoU is above t (strictly).
For t >= 0.5 an object can have at most one partner above t (two disjoint objects cannot each
cover more than half of a third), so the one-to-one matching needs no choice: greedy-by-IoU and
optimal (Hungarian) matching give the same pairs. Thresholds below 0.5 are refused.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
# IoU thresholds of average precision: 0.5, 0.55, ..., 0.95 (the cell-segmentation literature's).
THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.5, 0.96, 0.05), 2))
METHODS = ("auto", "watershed", "components")
_CROSS = ndimage.generate_binary_structure(2, 1)  # 4-connectivity


def boundary_target(instances, width: int = 1) -> np.ndarray:
    """The 3-class training target of an instance image: uint8 [H, W], 0 background, 1 interior,
    2 boundary.

    A pixel of an object is boundary when a pixel of another object, or of background, lies within
    `width` pixels of it (a square window: diagonal neighbours count). Where two objects touch,
    both sides are boundary, so the band there is twice as thick as against background, and the
    interiors of different objects never touch (not even diagonally). The image's edge is not a
    boundary: an object cut by it keeps its interior up to the edge.
    """
    instances = _instance_image(instances, "instances")
    if int(width) != width or width < 1:
        raise ValueError(f"width={width}: a boundary is at least 1 pixel wide")
    size = 2 * int(width) + 1
    highest = ndimage.maximum_filter(instances, size=size, mode="nearest")
    lowest = ndimage.minimum_filter(instances, size=size, mode="nearest")
    inside = instances != 0
    target = np.zeros(instances.shape, np.uint8)
    target[inside] = INTERIOR
    target[inside & (highest != lowest)] = BOUNDARY
    return target


def separate(probabilities, min_size=None, *, method: str = "auto", background: int = BACKGROUND,
             interior: int = INTERIOR, boundary: int = BOUNDARY) -> np.ndarray:
    """Instance labels from a model's class probabilities: int32 [H, W], 0 background and objects
    1..N (consecutive), or [B, H, W] for probabilities [B, H, W, C].

    `probabilities` are softmax probabilities [H, W, C] (or [B, H, W, C]). The foreground is every
    pixel whose most likely class is not `background` (so `boundary` is part of it, and only
    checked to be a class of its own).

    - `watershed` (the default for C >= 3): the seeds are the connected components (4-connected) of
      the pixels whose most likely class is `interior`; they grow over the foreground by watershed
      (scikit-image) on the elevation 1 - P(interior), so two seeds meet where the interior
      probability is lowest, in the boundary between touching objects. A foreground component
      without any seed is an object of its own.
    - `components` (the default for C == 2: background and object): each connected component
      (4-connected) of the foreground is an object; touching objects stay one.

    `min_size` (pixels; None: no limit): an object smaller than it is merged into the touching
    object it shares the most border with, or dropped when it touches none (`min_object_size`
    chooses one from training objects).
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim == 4:
        labels = np.zeros(probabilities.shape[:3], np.int32)
        for k, image in enumerate(probabilities):
            labels[k] = separate(image, min_size, method=method, background=background,
                                 interior=interior, boundary=boundary)
        return labels
    if probabilities.ndim != 3:
        raise ValueError(f"probabilities of shape {probabilities.shape}: expected [H, W, C] or "
                         "[B, H, W, C]")
    classes = probabilities.shape[-1]
    if classes < 2:
        raise ValueError("probabilities of 1 class: expected background and at least one other")
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {', '.join(METHODS)}")
    if method == "auto":
        method = "components" if classes == 2 else "watershed"
    used = {"background": background} | (
        {"interior": interior, "boundary": boundary} if method == "watershed" else {})
    for name, index in used.items():
        if not 0 <= index < classes:
            raise ValueError(f"{name}={index}: the probabilities have {classes} classes")
    if len(set(used.values())) < len(used):
        raise ValueError(f"classes {used}: each must be a different class")

    winner = np.argmax(probabilities, axis=-1)
    foreground = winner != background
    if method == "components":
        labels, _ = ndimage.label(foreground, structure=_CROSS)
    else:
        seeds, count = ndimage.label(winner == interior, structure=_CROSS)
        elevation = 1.0 - probabilities[..., interior].astype(np.float64)
        labels = watershed(elevation, seeds, connectivity=1, mask=foreground)
        unseeded, _ = ndimage.label(foreground & (labels == 0), structure=_CROSS)
        labels = np.where(unseeded > 0, unseeded + count, labels)
    if min_size is not None and min_size > 1:
        labels = _merge_small(labels, min_size)
    return _consecutive(labels)[0].astype(np.int32)


def min_object_size(instances_list) -> int | None:
    """A `min_size` for `separate` from training instance images: a quarter of the 5th-percentile
    object area, at least 1; None when there are no objects.

    A predicted fragment that small is far more likely a speck or a piece split off an object than
    an object: the 5th percentile ignores the few tiny objects of any annotation (specks, objects
    cut by the image's edge) that the minimum would follow, and the quarter leaves room for true
    objects smaller than those seen in training.
    """
    areas = []
    for instances in instances_list:
        instances = _instance_image(instances, "instances")
        areas.append(np.bincount(instances.ravel())[1:])
    areas = np.concatenate(areas) if areas else np.zeros(0, np.int64)
    areas = areas[areas > 0]
    if not areas.size:
        return None
    return max(1, int(0.25 * np.percentile(areas, 5)))


def object_scores(true_instances, predicted_instances, thresholds=THRESHOLDS) -> dict:
    """How the predicted objects of one image match the true ones (plain numbers, JSON-ready).

    - `true`, `predicted`: object counts;
    - `tp`, `fp`, `fn`: matched pairs at IoU > 0.5, predicted and true objects without a match;
    - `precision` TP/(TP+FP), `recall` TP/(TP+FN), `f1` 2TP/(2TP+FP+FN), all at IoU 0.5;
    - `mean_matched_iou`: the mean IoU of the matched pairs (None without any);
    - `pq`, panoptic quality: the sum of the matched pairs' IoU / (TP + FP/2 + FN/2);
    - `ap`: average precision as in StarDist and the 2018 Data Science Bowl, the mean over
      `thresholds` t (0.5, 0.55, ..., 0.95) of TP_t/(TP_t+FP_t+FN_t), matching by IoU > t;
      `ap_at`: {t: that ratio};
    - `tp_at` {t: TP_t} and `matched_iou_sum`: what `aggregate_scores` adds up.

    Empty images: with no object in either image, every ratio is 1.0 (nothing to find, nothing
    invented: a perfect answer). With objects on one side only, the ratios that would be 0/0 are
    0.0: predicted objects on an empty truth score precision 0 (and recall 0); no prediction on
    a truth with objects scores recall 0 (and precision 0). F1, PQ and AP are then 0 anyway.
    """
    true_instances = _instance_image(true_instances, "true_instances")
    predicted_instances = _instance_image(predicted_instances, "predicted_instances")
    if true_instances.shape != predicted_instances.shape:
        raise ValueError(f"true instances {true_instances.shape} and predicted instances "
                         f"{predicted_instances.shape}: expected the same shape")
    thresholds = _thresholds(thresholds)
    iou = _iou_matrix(true_instances, predicted_instances)
    n_true, n_pred = iou.shape
    matched = iou > 0.5
    counts = {"true": n_true, "predicted": n_pred, "tp": int(np.count_nonzero(matched)),
              "tp_at": {t: int(np.count_nonzero(iou > t)) for t in thresholds},
              "matched_iou_sum": float(iou[matched].sum())}
    return {"images": 1, **_scores(counts)}


def aggregate_scores(per_image) -> dict:
    """Dataset scores from the `object_scores` of its images: TP, FP, FN (at each threshold) and the
    matched IoU are summed over the images, then the ratios computed from the sums, as one image
    holding all objects would score (StarDist's `matching_dataset`). Images empty in both truth
    and prediction add nothing; with no object anywhere, every ratio is 1.0."""
    per_image = list(per_image)
    if not per_image:
        raise ValueError("no images to aggregate")
    thresholds = tuple(per_image[0]["tp_at"])
    if any(tuple(s["tp_at"]) != thresholds for s in per_image):
        raise ValueError("the images were scored at different thresholds")
    counts = {"true": sum(s["true"] for s in per_image),
              "predicted": sum(s["predicted"] for s in per_image),
              "tp": sum(s["tp"] for s in per_image),
              "tp_at": {t: sum(s["tp_at"][t] for s in per_image) for t in thresholds},
              "matched_iou_sum": float(sum(s["matched_iou_sum"] for s in per_image))}
    return {"images": sum(s["images"] for s in per_image), **_scores(counts)}


def _scores(counts: dict) -> dict:
    """Every score from the counts: objects, TP at 0.5 and at each threshold, the matched IoU's
    sum."""
    n_true, n_pred = counts["true"], counts["predicted"]
    empty = 1.0 if n_true == 0 and n_pred == 0 else 0.0

    def ratio(numerator, denominator):
        return float(numerator / denominator) if denominator else empty

    ap_at = {t: ratio(tp, n_true + n_pred - tp) for t, tp in counts["tp_at"].items()}
    tp = counts["tp"]
    fp, fn = n_pred - tp, n_true - tp
    iou_sum = counts["matched_iou_sum"]
    return {"true": n_true, "predicted": n_pred, "tp": tp, "fp": fp, "fn": fn,
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "mean_matched_iou": iou_sum / tp if tp else None,
            "pq": ratio(iou_sum, tp + fp / 2 + fn / 2),
            "ap": float(np.mean(list(ap_at.values()))), "ap_at": ap_at,
            "tp_at": dict(counts["tp_at"]), "matched_iou_sum": iou_sum}


def _thresholds(thresholds) -> tuple:
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds or any(not 0.5 <= t < 1 for t in thresholds):
        raise ValueError(f"thresholds {thresholds}: expected IoU thresholds in [0.5, 1), where "
                         "matching is one-to-one")
    return thresholds


def _iou_matrix(true_instances, predicted_instances) -> np.ndarray:
    """IoU [true objects, predicted objects], from one pass over the pixels."""
    true_ids, n_true = _consecutive(true_instances)
    pred_ids, n_pred = _consecutive(predicted_instances)
    pairs = np.bincount(true_ids.ravel().astype(np.int64) * (n_pred + 1) + pred_ids.ravel(),
                        minlength=(n_true + 1) * (n_pred + 1)).reshape(n_true + 1, n_pred + 1)
    overlap = pairs[1:, 1:].astype(np.float64)
    true_area, pred_area = pairs[1:, :].sum(1), pairs[:, 1:].sum(0)
    union = true_area[:, None] + pred_area[None, :] - overlap
    return overlap / np.maximum(union, 1)


def _merge_small(labels: np.ndarray, min_size) -> np.ndarray:
    """Objects under `min_size` pixels, smallest first, merged into the touching object they share
    the most border with, or dropped."""
    labels = labels.copy()
    sizes = np.bincount(labels.ravel())
    slices = ndimage.find_objects(labels)
    small = [k for k in range(1, len(sizes)) if 0 < sizes[k] < min_size]
    for k in sorted(small, key=lambda k: sizes[k]):
        if sizes[k] >= min_size:  # grown by merged fragments
            continue
        window = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in slices[k - 1])
        part = labels[window]
        own = part == k
        ring = ndimage.binary_dilation(own, structure=_CROSS) & ~own
        neighbours = part[ring]
        neighbours = neighbours[neighbours != 0]
        into = int(np.bincount(neighbours).argmax()) if neighbours.size else 0
        part[own] = into
        if into:
            sizes[into] += sizes[k]
            slices[into - 1] = tuple(slice(min(a.start, b.start), max(a.stop, b.stop))
                                     for a, b in zip(slices[into - 1], slices[k - 1]))
        sizes[k] = 0
    return labels


def _consecutive(labels: np.ndarray):
    """(labels renumbered 0, 1..N keeping background 0 and the ids' order, N)."""
    values, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    if values.size and values[0] == 0:
        return inverse, values.size - 1
    return inverse + 1, values.size


def _instance_image(instances, name: str) -> np.ndarray:
    instances = np.asarray(instances)
    if instances.ndim != 2 or not np.issubdtype(instances.dtype, np.integer):
        raise ValueError(f"{name}: expected an int label image [H, W], got {instances.dtype} "
                         f"{instances.shape}")
    if instances.size and instances.min() < 0:
        raise ValueError(f"{name}: object ids are positive (0: background)")
    return instances


SEPARATION_CLASSES = ("background", "interior", "boundary")  # the names boundary_target's classes get


def classes_for_separation(class_names) -> dict:
    """How to `separate` the probabilities of a model with these class names (in output order):
    dict(method=..., background=..., interior=..., boundary=...), ready as `separate`'s keywords.

    - background, interior and boundary (in any order): `watershed` with those classes;
    - the trimap pet models' (pet, background, border): `watershed`, interior pet, boundary border;
    - two classes (e.g. background and pet, or background and foreground): `components`, the
      object class as interior;
    - any other model: `components` of every pixel whose class is not background, so objects of
      different classes that touch come out as one object.

    The background is the class named "background", else class 0 (what padding and crops also
    take as background). For `components`, `boundary` is None (unused), and so is `interior` when
    more than one class is foreground.
    """
    names = [str(name).lower() for name in class_names]
    if len(names) < 2:
        raise ValueError(f"classes {tuple(class_names)}: separating objects needs a background "
                         "and at least one other class")
    index = {name: k for k, name in enumerate(names)}
    if len(names) == 3 and set(names) == set(SEPARATION_CLASSES):
        return dict(method="watershed", background=index["background"],
                    interior=index["interior"], boundary=index["boundary"])
    if len(names) == 3 and set(names) == {"pet", "background", "border"}:
        return dict(method="watershed", background=index["background"], interior=index["pet"],
                    boundary=index["border"])
    background = index.get("background", 0)
    others = [k for k in range(len(names)) if k != background]
    return dict(method="components", background=background,
                interior=others[0] if len(others) == 1 else None, boundary=None)


def instance_width(instances) -> float:
    """The typical width in pixels of an instance image's objects, as
    `unet_tf.data.geometry.object_width` measures a mask's (4 x area / boundary length, summed
    over the objects) but with each object's own outline: where two objects touch, the edge
    between them counts for both, so touching objects are not measured as one wide object. nan
    for an image without objects."""
    instances = _instance_image(instances, "instances")
    area = np.count_nonzero(instances)
    if not area:
        return float("nan")
    # Edges between a pixel of an object and any other id (background, another object, or the
    # image border), counted once for each object they bound.
    padded = np.pad(instances, 1)
    edges = 0
    for first, second in ((padded[1:], padded[:-1]), (padded[:, 1:], padded[:, :-1])):
        differ = first != second
        edges += np.count_nonzero(differ & (first != 0)) + np.count_nonzero(differ & (second != 0))
    return 4.0 * area / edges
