"""Synthetic "pets": examples with oxford_iiit_pet's features, deterministic by seed.

Each example is a photograph-like `image` (uint8, varying size and aspect, like the real photos)
with one or two overlapping ellipses (the "pet") on a textured background, and a
`segmentation_mask` trimap: 1 pet, 2 background, 3 a thin border band along the pet's outline, as
in the real annotations. Pets and backgrounds share colours, so the model must learn shape and
texture, not a colour threshold; a small U-Net learns it in a minute or two on a CPU.
"""

from __future__ import annotations

import numpy as np

BORDER_WIDTH = 2.0  # pixels, about what the real trimaps draw


def _ellipse_distance(yy, xx, cy, cx, ry, rx, angle):
    """Approximate signed distance in pixels to an ellipse's outline (negative inside)."""
    cos, sin = np.cos(angle), np.sin(angle)
    u = (xx - cx) * cos + (yy - cy) * sin
    v = -(xx - cx) * sin + (yy - cy) * cos
    radius = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    return (radius - 1.0) * min(rx, ry)


def _texture(rng, height, width, base_colour, roughness):
    noise = rng.normal(0.0, roughness, (height // 4 + 2, width // 4 + 2, 3))
    noise = np.kron(noise, np.ones((4, 4, 1)))[:height, :width]  # blotches, not pixel noise
    return base_colour + noise + rng.normal(0.0, 6.0, (height, width, 3))


def make_example(rng: np.random.Generator) -> dict:
    """One example: {"image": uint8 [H, W, 3], "segmentation_mask": uint8 [H, W, 1]}."""
    height, width = (int(v) for v in rng.integers(80, 161, size=2))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    # Background: a gradient in one colour with blotchy texture and a few stripes.
    background_colour = rng.uniform(40, 215, 3)
    gradient = np.linspace(-30, 30, width)[None, :, None] * rng.choice([-1, 1])
    image = _texture(rng, height, width, background_colour, 18.0) + gradient
    for _ in range(int(rng.integers(0, 3))):
        row = int(rng.integers(0, height))
        image[row:row + int(rng.integers(2, 6))] += rng.uniform(-40, 40, 3)

    # Pet: a body ellipse and often a head, in a colour at some distance from the background.
    side = min(height, width)
    cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
    ry, rx = rng.uniform(0.18, 0.38) * side, rng.uniform(0.18, 0.38) * side
    distance = _ellipse_distance(yy, xx, cy, cx, ry, rx, rng.uniform(0, np.pi))
    if rng.random() < 0.7:
        hy = cy + rng.uniform(-1, 1) * ry
        hx = cx + rng.uniform(-1, 1) * rx
        hr = rng.uniform(0.35, 0.6) * min(ry, rx)
        distance = np.minimum(distance, _ellipse_distance(yy, xx, hy, hx, hr, hr, 0.0))
    offset = rng.uniform(50, 110, 3) * rng.choice([-1, 1], 3)
    pet_colour = np.clip(background_colour + offset, 0, 255)
    pet = _texture(rng, height, width, pet_colour, 30.0)
    inside = distance < 0
    # Soft edge, as a camera would blur it.
    alpha = np.clip(0.5 - distance, 0.0, 1.0)[..., None]
    image = alpha * pet + (1 - alpha) * image

    mask = np.full((height, width), 2, np.uint8)
    mask[inside] = 1
    mask[np.abs(distance) < BORDER_WIDTH / 2 + 0.5] = 3
    return {
        "image": np.clip(image, 0, 255).astype(np.uint8),
        "segmentation_mask": mask[..., None],
    }


def make_examples(count: int, seed: int) -> list:
    """`count` examples; the same seed gives the same examples."""
    rng = np.random.default_rng(seed)
    return [make_example(rng) for _ in range(count)]
