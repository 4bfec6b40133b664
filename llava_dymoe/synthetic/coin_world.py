"""Image domains of the CoIN-shaped suite: the shared world of :mod:`.world` seen four ways.

Every image is the 4x4 board of :mod:`.world` (coloured shapes and letter glyphs), rendered in
one of four domains so that tasks that ask the same question forms still differ in what the
image looks like (CoIN's GQA, VQAv2, VizWiz, TextVQA and OCR-VQA share their instruction and
many question forms; what separates them is the picture):

==========  ==========================================================================
domain      what the image shows
==========  ==========================================================================
plain       the board on the light grey background of :mod:`.world` (GQA, ScienceQA,
            ImageNet, Grounding and, with a word on it, TextVQA)
photo       the board in front of a horizon: light blue sky above, a grey-brown floor
            below (VQAv2's "photos")
cover       a book cover: the cover colour (one per genre) as background, the title in
            row 1, the author in row 4, one emblem shape in between (OCR-VQA)
degraded    a plain board blurred (radius ``blur``); a "lens covered" image is also
            darkened and blurred so much that nothing can be read (VizWiz's
            unanswerable questions: the truth is visible in the image)
==========  ==========================================================================

:class:`CoinScene` wraps a :class:`~.world.Scene` with its domain; :meth:`CoinScene.to_dict` is
the metadata the writer stores (the world scene plus ``domain``, ``cover``, ``author``, ``blur``,
``covered``), enough to recompute every answer and to re-render the image.  Rendering is pure
PIL (integer boxes, bitmap glyphs, ``GaussianBlur``), so a scene always gives the same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .world import BACKGROUND, GRID, Scene, Text, draw_scene, render

DOMAINS = ("plain", "photo", "cover", "degraded")
#: ``photo``: sky above the horizon (the middle of the image), floor below.
SKY, FLOOR = (200, 222, 245), (196, 186, 170)
#: ``cover``: the cover colour of each genre (light, so black glyphs stay readable).
COVERS: Dict[str, Tuple[int, int, int]] = {
    "animal": (245, 205, 160), "plant": (190, 232, 190), "vehicle": (188, 204, 245), "fruit": (245, 235, 150),
}
GENRES: Tuple[str, ...] = tuple(COVERS)
#: Authors of the book covers: three letters, written one per cell in the bottom row.
AUTHORS: Tuple[str, ...] = ("ann", "bob", "lee", "kim", "max", "sam", "tom", "eva")
#: ``degraded``: blur radius in pixels for a 24 px cell (scaled with the cell) of a readable and of a covered image.
BLUR_READABLE, BLUR_COVERED = 1, 8
#: ``degraded`` and covered: every channel is multiplied by this share (a finger over the lens).
COVERED_BRIGHTNESS = 0.35
TITLE_ROW, AUTHOR_ROW = 0, GRID - 1


@dataclass(frozen=True)
class CoinScene:
    """A world scene in one domain; ``genre`` (cover), ``author`` (cover), ``covered`` (degraded)."""

    scene: Scene
    domain: str = "plain"
    genre: Optional[str] = None
    author: Optional[str] = None
    covered: bool = False

    def __post_init__(self):
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}; known: {', '.join(DOMAINS)}")
        if (self.domain == "cover") != (self.genre is not None and self.author is not None):
            raise ValueError("a cover (and only a cover) has a genre and an author")

    # the world scene's parts, so task code reads a CoinScene like a Scene
    @property
    def objects(self):
        return self.scene.objects

    @property
    def text(self):
        return self.scene.text

    def author_text(self) -> Optional[Text]:
        return None if self.author is None else Text(self.author, AUTHOR_ROW, 0)

    def blur(self, image_size: int) -> int:
        """Blur radius in pixels (0 outside ``degraded``), scaled with the cell size (24 px cells: 1 or 8)."""
        if self.domain != "degraded":
            return 0
        cell = image_size // GRID
        return max(1, (BLUR_COVERED if self.covered else BLUR_READABLE) * cell // 24)

    def image(self, image_size: int):
        from PIL import Image, ImageFilter

        if self.domain == "plain":
            return render(self.scene, image_size)
        if self.domain == "cover":
            author = self.author_text()
            letters = tuple((ch, r, c) for ch, (r, c) in zip(author.word, author.cells()))
            return render(Scene(self.scene.objects, self.scene.text, self.scene.letters + letters), image_size,
                          COVERS[self.genre])
        if self.domain == "photo":
            img = render(Scene(), image_size, SKY)  # validates the size
            img.paste(FLOOR, (0, image_size // 2, image_size, image_size))
            draw_scene(img, self.scene)
            return img
        img = render(self.scene, image_size, BACKGROUND).filter(ImageFilter.GaussianBlur(self.blur(image_size)))
        if self.covered:
            img = Image.eval(img, lambda v: int(v * COVERED_BRIGHTNESS))
        return img

    def to_dict(self, image_size: int) -> dict:
        out = self.scene.to_dict(image_size)
        out.update({"domain": self.domain, "genre": self.genre, "author": self.author,
                    "author_row": None if self.author is None else AUTHOR_ROW,
                    "blur": self.blur(image_size), "covered": self.covered})
        return out
