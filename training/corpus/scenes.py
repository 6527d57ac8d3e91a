"""Scene images for the embedded corpus: 1-3 objects of one kind and colour at a position, on a background.

Each scene keeps its structured description (`Scene`); `render_scene` draws it with PIL as simple vector
shapes, with random size and placement jitter inside the named region of the canvas.
"""

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw


COLOURS = {
    "red": (214, 40, 40), "blue": (38, 84, 214), "green": (46, 158, 64), "yellow": (246, 206, 36),
    "black": (24, 24, 24), "white": (250, 250, 250), "orange": (245, 130, 24), "pink": (240, 128, 184),
    "purple": (124, 56, 170), "brown": (128, 78, 36),
}  # fmt: skip
BACKGROUNDS = {
    "sky blue": (164, 202, 236), "mint": (172, 220, 186), "sand": (226, 206, 162), "lavender": (202, 188, 230),
    "grey": (186, 186, 186), "peach": (240, 196, 170),
}  # fmt: skip
# region of the canvas for each position, as fractions (left, top, right, bottom)
POSITIONS = {
    "left": (0.0, 0.0, 0.5, 1.0), "right": (0.5, 0.0, 1.0, 1.0), "top": (0.0, 0.0, 1.0, 0.5),
    "bottom": (0.0, 0.5, 1.0, 1.0), "centre": (0.25, 0.25, 0.75, 0.75),
}  # fmt: skip
MAX_COUNT = 3


@dataclass(frozen=True)
class Scene:
    """What an image shows: `count` objects of one `kind` and `colour` at `position`, on `background`."""

    kind: str
    colour: str
    count: int
    position: str
    background: str


def sample_scene(rng: np.random.Generator) -> Scene:
    return Scene(
        kind=str(rng.choice(KINDS)),
        colour=str(rng.choice(list(COLOURS))),
        count=int(rng.integers(1, MAX_COUNT + 1)),
        position=str(rng.choice(list(POSITIONS))),
        background=str(rng.choice(list(BACKGROUNDS))),
    )


def _shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    """Darker (factor < 1) or lighter (factor > 1, towards white) version of a colour."""
    if factor <= 1:
        return tuple(int(c * factor) for c in rgb)
    return tuple(int(c + (255 - c) * (factor - 1)) for c in rgb)


# Each drawer fills the square box (x0, y0, x1, y1) with one object, in coordinates relative to the box:
# `_at(box, [(u, v), ...])` maps (0, 0) to its top-left and (1, 1) to its bottom-right corner. `fill` is the
# object's colour, `ink` a contrasting colour for details (eyes, doors, windows).


def _at(box, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    x0, y0, x1, _ = box
    return [(x0 + u * (x1 - x0), y0 + v * (x1 - x0)) for u, v in points]


def _disc(box, u: float, v: float, radius: float) -> list[tuple[float, float]]:
    """Bounding box of a circle centred at (u, v), in box-relative units."""
    return _at(box, [(u - radius, v - radius), (u + radius, v + radius)])


def _circle(draw, box, fill, outline, ink):
    draw.ellipse(box, fill=fill, outline=outline, width=2)


def _square(draw, box, fill, outline, ink):
    draw.rectangle(_at(box, [(0.1, 0.1), (0.9, 0.9)]), fill=fill, outline=outline, width=2)


def _triangle(draw, box, fill, outline, ink):
    draw.polygon(_at(box, [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)]), fill=fill, outline=outline, width=2)


def _star(draw, box, fill, outline, ink):
    radii = [0.5 if i % 2 == 0 else 0.21 for i in range(10)]
    angles = [-math.pi / 2 + i * math.pi / 5 for i in range(10)]
    points = [(0.5 + r * math.cos(a), 0.5 + r * math.sin(a)) for r, a in zip(radii, angles)]
    draw.polygon(_at(box, points), fill=fill, outline=outline, width=2)


def _heart(draw, box, fill, outline, ink):
    draw.ellipse(_at(box, [(0.0, 0.1), (0.52, 0.62)]), fill=fill, outline=outline, width=2)
    draw.ellipse(_at(box, [(0.48, 0.1), (1.0, 0.62)]), fill=fill, outline=outline, width=2)
    draw.polygon(_at(box, [(0.03, 0.44), (0.97, 0.44), (0.5, 1.0)]), fill=fill)
    draw.line(_at(box, [(0.03, 0.44), (0.5, 1.0), (0.97, 0.44)]), fill=outline, width=2)


def _house(draw, box, fill, outline, ink):
    draw.rectangle(_at(box, [(0.12, 0.45), (0.88, 1.0)]), fill=fill, outline=outline, width=2)
    draw.polygon(_at(box, [(0.0, 0.47), (0.5, 0.05), (1.0, 0.47)]), fill=_shade(fill, 0.7), outline=outline)
    draw.rectangle(_at(box, [(0.4, 0.7), (0.6, 1.0)]), fill=ink)


def _tree(draw, box, fill, outline, ink):
    draw.rectangle(_at(box, [(0.42, 0.55), (0.58, 1.0)]), fill=_shade(COLOURS["brown"], 0.7))
    draw.ellipse(_at(box, [(0.0, 0.0), (1.0, 0.7)]), fill=fill, outline=outline, width=2)


def _car(draw, box, fill, outline, ink):
    cabin = [(0.2, 0.47), (0.32, 0.22), (0.7, 0.22), (0.82, 0.47)]
    draw.polygon(_at(box, cabin), fill=fill, outline=outline, width=2)
    draw.rectangle(_at(box, [(0.36, 0.28), (0.66, 0.45)]), fill=_shade(ink, 1.4))  # window
    draw.rectangle(_at(box, [(0.0, 0.45), (1.0, 0.75)]), fill=fill, outline=outline, width=2)
    for u in (0.25, 0.75):
        draw.ellipse(_disc(box, u, 0.75, 0.12), fill=(30, 30, 30), outline=(120, 120, 120), width=2)


def _fish(draw, box, fill, outline, ink):
    draw.polygon(_at(box, [(0.0, 0.2), (0.3, 0.5), (0.0, 0.8)]), fill=_shade(fill, 0.75), outline=outline)  # tail
    draw.ellipse(_at(box, [(0.2, 0.25), (1.0, 0.75)]), fill=fill, outline=outline, width=2)
    draw.ellipse(_disc(box, 0.75, 0.42, 0.05), fill=ink)


def _bird(draw, box, fill, outline, ink):
    draw.ellipse(_at(box, [(0.05, 0.35), (0.78, 0.82)]), fill=fill, outline=outline, width=2)  # body
    draw.ellipse(_at(box, [(0.58, 0.15), (0.9, 0.47)]), fill=fill, outline=outline, width=2)  # head
    draw.polygon(_at(box, [(0.88, 0.26), (1.0, 0.32), (0.88, 0.38)]), fill=(240, 150, 20))  # beak
    draw.ellipse(_at(box, [(0.25, 0.45), (0.62, 0.68)]), fill=_shade(fill, 0.75))  # wing
    draw.ellipse(_disc(box, 0.76, 0.27, 0.035), fill=ink)


def _flower(draw, box, fill, outline, ink):
    x0, _, x1, _ = box
    draw.line(_at(box, [(0.5, 0.38), (0.5, 1.0)]), fill=(40, 120, 40), width=max(2, int(0.06 * (x1 - x0))))
    for i in range(5):
        angle = -math.pi / 2 + i * 2 * math.pi / 5
        petal = _disc(box, 0.5 + 0.2 * math.cos(angle), 0.38 + 0.2 * math.sin(angle), 0.15)
        draw.ellipse(petal, fill=fill, outline=outline)
    centre = COLOURS["orange"] if fill == COLOURS["yellow"] else COLOURS["yellow"]
    draw.ellipse(_disc(box, 0.5, 0.38, 0.1), fill=centre)


def _boat(draw, box, fill, outline, ink):
    draw.line(_at(box, [(0.5, 0.05), (0.5, 0.62)]), fill=(60, 40, 20), width=2)  # mast
    draw.polygon(_at(box, [(0.54, 0.08), (0.54, 0.55), (0.88, 0.55)]), fill=_shade(fill, 1.25), outline=outline)
    hull = [(0.0, 0.6), (1.0, 0.6), (0.85, 0.92), (0.15, 0.92)]
    draw.polygon(_at(box, hull), fill=fill, outline=outline, width=2)


DRAWERS = {
    "circle": _circle, "square": _square, "triangle": _triangle, "star": _star, "heart": _heart,
    "house": _house, "tree": _tree, "car": _car, "fish": _fish, "bird": _bird, "flower": _flower, "boat": _boat,
}  # fmt: skip
KINDS = tuple(DRAWERS)


def _object_boxes(scene: Scene, rng: np.random.Generator, size: int) -> list[tuple[float, float, float, float]]:
    """One square box per object: the region is cut into `count` cells along its longer side, and each object
    gets a random size (55-85% of its cell) and a small offset inside the cell."""
    left, top, right, bottom = (f * size for f in POSITIONS[scene.position])
    along_x = right - left >= bottom - top
    cell = ((right - left) if along_x else (bottom - top)) / scene.count
    boxes = []
    for i in range(scene.count):
        x0, y0 = (left + i * cell, top) if along_x else (left, top + i * cell)
        cell_w, cell_h = (cell, bottom - top) if along_x else (right - left, cell)
        side = min(cell_w, cell_h) * rng.uniform(0.55, 0.85)
        # centre of the cell, moved by at most a quarter of the free space
        cx = x0 + cell_w / 2 + rng.uniform(-0.25, 0.25) * (cell_w - side)
        cy = y0 + cell_h / 2 + rng.uniform(-0.25, 0.25) * (cell_h - side)
        boxes.append((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    return boxes


def render_scene(scene: Scene, rng: np.random.Generator, size: int = 128) -> Image.Image:
    """(size, size) RGB picture of `scene`; `rng` draws the object sizes and placement."""
    image = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    fill = COLOURS[scene.colour]
    ink = (235, 235, 235) if scene.colour == "black" else (30, 30, 30)
    outline = (90, 90, 90) if scene.colour == "black" else _shade(fill, 0.55)
    for box in _object_boxes(scene, rng, size):
        DRAWERS[scene.kind](draw, box, fill, outline, ink)
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
