"""The shared image world of the synthetic continual suite: coloured shapes and glyphs on a grid.

An image is a ``GRID x GRID`` board of square cells on a light background.  A cell is empty,
holds one object (a colour from :data:`COLOURS` and a shape from :data:`SHAPES`, drawn inside
the cell with a fixed margin) or holds one upper-case letter of a word drawn with PIL's
built-in bitmap font (the words of :data:`WORDS` run left to right along one row).

The cell size equals the tiny CLIP's patch size (``image_size // GRID``), so every cell is
exactly one image token: the tokens of an old and a new task come from the same distribution,
which is what lets old-task tokens drift into new experts (pilot-drift.md: "shared image-like
tokens").  Every task of the suite and of the base mixture draws its scenes from this module.

Rendering is pure PIL with integer coordinates and nearest-neighbour glyph scaling, so the
same :class:`Scene` always gives the same pixels and the same PNG bytes.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

#: Object colours (RGB), also the colour answer words.
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (30, 160, 60), "blue": (40, 70, 230), "yellow": (225, 190, 0),
}
#: Object shapes, also the shape answer words.
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle", "cross")
#: Words of the text-reading task: 3-4 letters (one per cell), each one sentencepiece piece of
#: the tiny tokenizer (:mod:`llava_dymoe.tiny`), and none of them a colour, shape or number word.
WORDS: Tuple[str, ...] = ("cat", "dog", "bird", "fish", "car", "boat", "tree", "pear",
                          "tool", "word", "text", "box", "data", "time", "hand", "year")
#: Count answers, as words (index = count).
NUMBER_WORDS: Tuple[str, ...] = ("zero", "one", "two", "three", "four")
GRID = 4
BACKGROUND = (235, 235, 235)
INK = (0, 0, 0)
#: Pixels left free on each side of an object inside its cell, for a cell of 16 px.
MARGIN_16 = 2


@dataclass(frozen=True)
class Obj:
    """One object: ``colour`` ``shape`` in cell (``row``, ``col``)."""

    colour: str
    shape: str
    row: int
    col: int

    @property
    def kind(self) -> str:
        """The object's class name, e.g. ``"red circle"``."""
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Text:
    """A word written one letter per cell from (``row``, ``col``) to the right."""

    word: str
    row: int
    col: int

    def cells(self) -> List[Tuple[int, int]]:
        return [(self.row, self.col + i) for i in range(len(self.word))]


@dataclass(frozen=True)
class Scene:
    """Everything an image shows; :meth:`to_dict` is what the metadata JSONL stores."""

    objects: Tuple[Obj, ...] = ()
    text: Optional[Text] = None
    letters: Tuple[Tuple[str, int, int], ...] = field(default=())  # single glyphs (letter, row, col)

    def occupied(self) -> set:
        cells = {(o.row, o.col) for o in self.objects} | {(r, c) for _, r, c in self.letters}
        return cells | set(self.text.cells() if self.text else [])

    def image(self, image_size: int):
        """The rendered image (what the writer saves); other scene types render their own way."""
        return render(self, image_size)

    def to_dict(self, image_size: int) -> dict:
        cell = image_size // GRID
        return {"image_size": image_size, "grid": GRID, "cell": cell, "margin": margin(cell),
                "objects": [{"colour": o.colour, "shape": o.shape, "row": o.row, "col": o.col}
                            for o in self.objects],
                "text": None if self.text is None else
                {"word": self.text.word, "row": self.text.row, "col": self.text.col},
                "letters": [{"letter": ch, "row": r, "col": c} for ch, r, c in self.letters]}


def margin(cell: int) -> int:
    """Free pixels on each side of an object in a cell of ``cell`` pixels (2 for 16 px)."""
    return max(1, cell * MARGIN_16 // 16)


def object_box(obj: Obj, image_size: int) -> Tuple[int, int, int, int]:
    """Pixel box ``(x1, y1, x2, y2)`` of an object, ``x2``/``y2`` exclusive."""
    cell = image_size // GRID
    m = margin(cell)
    return (obj.col * cell + m, obj.row * cell + m, (obj.col + 1) * cell - m, (obj.row + 1) * cell - m)


# ----------------------------------------------------------------------------- sampling
def all_cells() -> List[Tuple[int, int]]:
    return [(r, c) for r in range(GRID) for c in range(GRID)]


def place_objects(rng: random.Random, kinds: Sequence[Tuple[str, str]],
                  taken: Sequence[Tuple[int, int]] = ()) -> Tuple[Obj, ...]:
    """Put one object of each ``(colour, shape)`` in distinct random free cells, row-major order."""
    free = [c for c in all_cells() if c not in set(taken)]
    cells = rng.sample(free, len(kinds))
    objs = [Obj(colour, shape, r, c) for (colour, shape), (r, c) in zip(kinds, cells)]
    return tuple(sorted(objs, key=lambda o: (o.row, o.col)))


def random_kind(rng: random.Random) -> Tuple[str, str]:
    return rng.choice(sorted(COLOURS)), rng.choice(SHAPES)


def random_scene(rng: random.Random, n_min: int = 1, n_max: int = 4) -> Scene:
    """A scene of ``n_min..n_max`` objects of independent random kinds."""
    n = rng.randint(n_min, n_max)
    return Scene(objects=place_objects(rng, [random_kind(rng) for _ in range(n)]))


def text_scene(rng: random.Random, word: str, n_objects: int) -> Scene:
    """``word`` on a random row (left-aligned at a random column that fits) plus random objects."""
    row = rng.randrange(GRID)
    text = Text(word, row, rng.randrange(GRID - len(word) + 1))
    return Scene(objects=place_objects(rng, [random_kind(rng) for _ in range(n_objects)], text.cells()),
                 text=text)


# ----------------------------------------------------------------------------- rendering
@lru_cache(maxsize=None)
def glyph(letter: str, scale: int):
    """The bitmap-font glyph of ``letter`` (cropped to its ink, upscaled by ``scale``), mode ``L``."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default_imagefont()  # PIL's built-in bitmap font: no file, no FreeType
    canvas = Image.new("L", (16, 16), 0)
    ImageDraw.Draw(canvas).text((2, 0), letter, font=font, fill=255)
    box = canvas.getbbox()
    if box is None:
        raise ValueError(f"the bitmap font has no glyph for {letter!r}")
    g = canvas.crop(box)
    return g.resize((g.width * scale, g.height * scale), Image.NEAREST) if scale > 1 else g


def _draw_letter(img, letter: str, row: int, col: int, cell: int) -> None:
    g = glyph(letter.upper(), max(1, cell // 8))
    if g.width > cell or g.height > cell:
        raise ValueError(f"glyph {letter!r} ({g.width}x{g.height}) does not fit a {cell} px cell")
    x = col * cell + (cell - g.width) // 2
    y = row * cell + (cell - g.height) // 2
    img.paste(INK, (x, y, x + g.width, y + g.height), mask=g)


def _draw_object(draw, obj: Obj, image_size: int) -> None:
    x1, y1, x2, y2 = object_box(obj, image_size)
    x2, y2 = x2 - 1, y2 - 1  # PIL boxes are inclusive
    fill = COLOURS[obj.colour]
    if obj.shape == "circle":
        draw.ellipse([x1, y1, x2, y2], fill=fill)
    elif obj.shape == "square":
        draw.rectangle([x1, y1, x2, y2], fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([((x1 + x2) // 2, y1), (x1, y2), (x2, y2)], fill=fill)
    elif obj.shape == "cross":
        w = max(1, (x2 - x1 + 1) // 3)
        cx, cy = x1 + (x2 - x1 + 1 - w) // 2, y1 + (y2 - y1 + 1 - w) // 2
        draw.rectangle([cx, y1, cx + w - 1, y2], fill=fill)
        draw.rectangle([x1, cy, x2, cy + w - 1], fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")


def render(scene: Scene, image_size: int = 64, background: Tuple[int, int, int] = BACKGROUND):
    """The scene as an RGB ``PIL.Image`` of ``image_size`` x ``image_size`` pixels on ``background``."""
    from PIL import Image

    if image_size % GRID or image_size // GRID < 8:
        raise ValueError(f"image_size must be a multiple of {GRID} with cells of at least 8 px, got {image_size}")
    img = Image.new("RGB", (image_size, image_size), background)
    draw_scene(img, scene)
    return img


def draw_scene(img, scene: Scene) -> None:
    """Draw the objects, the word and the single glyphs of ``scene`` onto the square image ``img``."""
    from PIL import ImageDraw

    image_size = img.width
    cell = image_size // GRID
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        _draw_object(draw, obj, image_size)
    if scene.text is not None:
        for ch, (r, c) in zip(scene.text.word, scene.text.cells()):
            _draw_letter(img, ch, r, c, cell)
    for ch, r, c in scene.letters:
        _draw_letter(img, ch, r, c, cell)
