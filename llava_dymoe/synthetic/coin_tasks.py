"""The CoIN-shaped suite: eight tasks in CoIN's order with CoIN's instructions, and its base mixture.

Harder than :data:`~.tasks.SUITE_TASKS` in the two ways CoIN is: the prompt does not name the task
(the short-answer tasks share CoIN's instruction "Answer the question using a single word or
phrase." and ask overlapping question forms: "What colour is the circle?", "How many red objects
are there?", "What is written in the image?"), and image tokens dominate the prompt (the suite is
meant for a tiny CLIP with 16x16 patches: 256 image tokens beside 57-97 text tokens).  What
separates the overlapping tasks is the image domain (:mod:`.coin_world`) or what the text asks,
so every answer stays determined by image plus text.

==========  ===========  ==========================================================  =============
name        CoIN task    question (CoIN's instruction)                                scorer
==========  ===========  ==========================================================  =============
science     ScienceQA    the colour/shape all objects share, 4 options + letter      sqa_letter
textvqa     TextVQA      a word on the board: what is written, colours, counts        exact
imagenet    ImageNet     "What is the object in the image?": 16 colour-shape classes  contains
gqa         GQA          plain board: colour, shape, count, "Is there ...?"           exact
vizwiz      VizWiz       blurred board, VizWiz's "Unanswerable" instruction           exact
grounding   Grounding    CoIN's box prompt, one object                                grounding_iou
vqav2       VQAv2        the board before a horizon: GQA's question forms             exact
ocrvqa      OCR-VQA      a book cover: who wrote, title, genre, emblem colour         exact
==========  ===========  ==========================================================  =============

``science``, ``imagenet`` and ``ground`` reuse the scenes and answers of :mod:`.tasks`
(``choice``, ``classify`` with CoIN's ImageNet question, ``ground``: its prompt is CoIN's).  Each sample keeps its
structured question (``query``) so the answers can be recomputed from the metadata alone.
"""
from __future__ import annotations

import random
from dataclasses import replace
from typing import Callable, Dict, Optional, Sequence, Tuple

from .coin_world import AUTHORS, GENRES, CoinScene
from .tasks import BASE_TASKS, SHORT, Sample, TaskDef, _unique, describe, make_choice, make_classify, make_ground
from .world import COLOURS, GRID, NUMBER_WORDS, WORDS, Obj, Scene, Text, random_kind, random_scene, text_scene

#: CoIN's ImageNet question (LLaVA's short-answer instruction follows it).
IMAGENET = "What is the object in the image?"
#: CoIN's (LLaVA's) VizWiz instruction, between the question and the short-answer instruction.
VIZWIZ = "When the provided information is insufficient, respond with 'Unanswerable'."
UNANSWERABLE = "unanswerable"
#: OCR-VQA's question templates used here (the dataset's own wording).
AUTHOR_Q, TITLE_Q = "Who wrote this book?", "What is the title of this book?"
GENRE_Q = "What is the genre of this book?"
#: Words of the book titles: the 3-4 letter words of the world (a title fits the top row).
TITLES: Tuple[str, ...] = WORDS

#: The shared question forms (``{}`` slots are colour / shape words).
FORMS = {
    "read": "What is written in the image?",
    "colour_of_shape": "What colour is the {shape}?",
    "shape_of_colour": "What shape is the {colour} object?",
    "count_colour": "How many {colour} objects are there?",
    "is_there": "Is there a {colour} {shape}?",
}


def ask(rng: random.Random, scene, form: str) -> Optional[Tuple[str, str, dict]]:
    """One question of a shared ``form`` about ``scene``: ``(text, answer, query)``, or None if the
    scene cannot answer it (no word to read, no object with a unique shape or colour)."""
    objs = scene.objects
    if form == "read":
        if scene.text is None:
            return None
        return FORMS[form], scene.text.word, {"type": form}
    if form == "count_colour":
        colour = rng.choice(sorted(COLOURS))
        return (FORMS[form].format(colour=colour), NUMBER_WORDS[sum(o.colour == colour for o in objs)],
                {"type": form, "given": colour})
    if form == "is_there":
        kind = rng.choice(objs).kind.split() if objs and rng.random() < 0.5 else list(random_kind(rng))
        present = any(o.colour == kind[0] and o.shape == kind[1] for o in objs)
        return (FORMS[form].format(colour=kind[0], shape=kind[1]), "yes" if present else "no",
                {"type": form, "given": " ".join(kind)})
    key = (lambda o: o.shape) if form == "colour_of_shape" else (lambda o: o.colour)
    candidates = _unique(objs, key)
    if not candidates:
        return None
    t = rng.choice(candidates)
    if form == "colour_of_shape":
        return FORMS[form].format(shape=t.shape), t.colour, {"type": form, "given": t.shape}
    return FORMS[form].format(colour=t.colour), t.shape, {"type": form, "given": t.colour}


def _pick(rng: random.Random, weights: Dict[str, float]) -> str:
    names = list(weights)
    return rng.choices(names, [weights[n] for n in names])[0]


def _shared(rng: random.Random, new_scene: Callable[[], object], weights: Dict[str, float],
            suffix: Sequence[str] = (SHORT,)) -> Tuple[object, str, str, dict]:
    """Draw a form, then scenes until one answers it: ``(scene, question, answer, query)``."""
    form = _pick(rng, weights)
    while True:
        scene = new_scene()
        asked = ask(rng, scene, form)
        if asked is not None:
            text, answer, query = asked
            return scene, "\n".join([text, *suffix]), answer, query


def _plain(make):
    """A task of :mod:`.tasks` whose scenes are shown on the plain board."""
    def make_plain(rng: random.Random, image_size: int) -> Sample:
        s = make(rng, image_size)
        return replace(s, scene=CoinScene(s.scene))
    return make_plain


def make_imagenet(rng: random.Random, image_size: int) -> Sample:
    """``classify``'s scenes and answers, asked with CoIN's ImageNet question."""
    s = _plain(make_classify)(rng, image_size)
    return replace(s, question=f"{IMAGENET}\n{SHORT}")


TEXTVQA_FORMS = {"read": 1, "colour_of_shape": 1, "count_colour": 1}
#: GQA and VQAv2 ask the same forms; VQAv2's images are photos (:mod:`.coin_world`).
BOARD_FORMS = {"colour_of_shape": 1, "shape_of_colour": 1, "count_colour": 1, "is_there": 1}
VIZWIZ_FORMS = {"read": 1, "colour_of_shape": 1, "count_colour": 1}
#: Share of VizWiz images whose lens is covered (the answer is "unanswerable").
VIZWIZ_COVERED = 0.3


def _word_board(rng: random.Random) -> Scene:
    word = rng.choice(WORDS)
    return text_scene(rng, word, rng.randint(0, 3))


def make_textvqa(rng: random.Random, image_size: int) -> Sample:
    """A word on the plain board among 0-3 objects: read it, or a colour / count question."""
    scene, q, a, query = _shared(rng, lambda: CoinScene(_word_board(rng)), TEXTVQA_FORMS)
    return Sample(scene, q, a, query)


def make_gqa(rng: random.Random, image_size: int) -> Sample:
    scene, q, a, query = _shared(rng, lambda: CoinScene(random_scene(rng, 1, 4)), BOARD_FORMS)
    return Sample(scene, q, a, query)


def make_vqav2(rng: random.Random, image_size: int) -> Sample:
    scene, q, a, query = _shared(rng, lambda: CoinScene(random_scene(rng, 1, 4), "photo"), BOARD_FORMS)
    return Sample(scene, q, a, query)


def make_vizwiz(rng: random.Random, image_size: int) -> Sample:
    """A blurred board (a word with objects, or objects only); covered images answer "unanswerable"."""
    covered = rng.random() < VIZWIZ_COVERED

    def new_scene():
        board = _word_board(rng) if rng.random() < 0.5 else random_scene(rng, 1, 4)
        return CoinScene(board, "degraded", covered=covered)

    scene, q, a, query = _shared(rng, new_scene, VIZWIZ_FORMS, (VIZWIZ, SHORT))
    return Sample(scene, q, UNANSWERABLE if covered else a, dict(query, covered=covered))


def cover_scene(rng: random.Random) -> CoinScene:
    """A book cover: title in the top row, author in the bottom row, one emblem in the rows between."""
    title = Text(rng.choice(TITLES), 0, 0)
    cell = (rng.randrange(1, GRID - 1), rng.randrange(GRID))
    emblem = Obj(*random_kind(rng), *cell)
    return CoinScene(Scene((emblem,), title), "cover", genre=rng.choice(GENRES), author=rng.choice(AUTHORS))


OCR_FORMS = {"author": 2, "title": 2, "genre": 2, "colour_of_shape": 3}


def make_ocrvqa(rng: random.Random, image_size: int) -> Sample:
    cover = cover_scene(rng)
    form = _pick(rng, OCR_FORMS)
    if form == "colour_of_shape":
        text, answer, query = ask(rng, cover, form)  # one emblem: always answerable
    else:
        text = {"author": AUTHOR_Q, "title": TITLE_Q, "genre": GENRE_Q}[form]
        answer = {"author": cover.author, "title": cover.text.word, "genre": cover.genre}[form]
        query = {"type": form}
    return Sample(cover, f"{text}\n{SHORT}", answer, query)


COIN_SHAPED_TASKS: Tuple[TaskDef, ...] = (
    TaskDef("science", "ScienceQA", "sqa_letter", 4, _plain(make_choice),
            "multiple choice (4 options, fixed order): the colour or the shape all objects share"),
    TaskDef("textvqa", "TextVQA", "exact", 6, make_textvqa,
            "a word on the board: what is written, the colour of a shape, the count of a colour"),
    TaskDef("imagenet", "ImageNet", "contains", 8, make_imagenet,
            "CoIN's ImageNet question: the main object among 16 colour-shape classes"),
    TaskDef("gqa", "GQA", "exact", 6, make_gqa, "plain board: colour, shape, count, is there"),
    TaskDef("vizwiz", "VizWiz", "exact", 8, make_vizwiz,
            "blurred board, VizWiz's instruction; a covered lens answers unanswerable"),
    TaskDef("grounding", "Grounding (RefCOCO)", "grounding_iou", 32, _plain(make_ground),
            "CoIN's box prompt: normalised box [x1, y1, x2, y2] of the one object"),
    TaskDef("vqav2", "VQAv2", "exact", 6, make_vqav2, "the board before a horizon: GQA's question forms"),
    TaskDef("ocrvqa", "OCR-VQA", "exact", 6, make_ocrvqa,
            "book cover: who wrote it, its title, its genre (cover colour), the emblem's colour"),
)


# ----------------------------------------------------------------------------- base mixture
def make_cover_read(rng: random.Random, image_size: int) -> Sample:
    """"Read the book cover." -> ``"bird, lee, animal"`` (title, author, genre)."""
    cover = cover_scene(rng)
    return Sample(cover, "Read the book cover.", f"{cover.text.word}, {cover.author}, {cover.genre}",
                  {"type": "cover_read"})


def make_photo_describe(rng: random.Random, image_size: int) -> Sample:
    scene = CoinScene(random_scene(rng, 1, 4), "photo")
    return Sample(scene, "Describe the photo.", describe(scene.scene), {"type": "describe"})


def make_blur_describe(rng: random.Random, image_size: int) -> Sample:
    """A degraded board described, or ``unanswerable`` when the lens is covered."""
    covered = rng.random() < VIZWIZ_COVERED
    board = _word_board(rng) if rng.random() < 0.5 else random_scene(rng, 1, 4)
    scene = CoinScene(board, "degraded", covered=covered)
    return Sample(scene, "Describe the blurred image.", UNANSWERABLE if covered else describe(board),
                  {"type": "describe", "covered": covered})


def make_row_has(rng: random.Random, image_size: int) -> Sample:
    """"Does row 2 hold a red object?" -> ``yes`` / ``no`` (plain boards and photos)."""
    board = random_scene(rng, 1, 4)
    scene = CoinScene(board, "photo" if rng.random() < 0.5 else "plain")
    r, colour = rng.randrange(GRID), rng.choice(sorted(COLOURS))
    present = any(o.row == r and o.colour == colour for o in board.objects)
    return Sample(scene, f"Does row {r + 1} hold a {colour} object?", "yes" if present else "no",
                  {"type": "row_has", "row": r, "given": colour})


COIN_BASE_EXTRA: Tuple[TaskDef, ...] = (
    TaskDef("coverread", "reading covers", "exact", 12, make_cover_read, "title, author, genre of a cover"),
    TaskDef("photodescribe", "captioning photos", "exact", 64, make_photo_describe, "list a photo's objects"),
    TaskDef("blurdescribe", "captioning blurred images", "exact", 64, make_blur_describe,
            "list a blurred board's objects, or unanswerable"),
    TaskDef("rowhas", "row queries", "exact", 4, make_row_has, "is there an object of a colour in row r"),
)
#: The CoIN-shaped base mixture: the base tasks of :mod:`.tasks` on the plain board plus the new domains.
COIN_BASE_TASKS: Tuple[TaskDef, ...] = BASE_TASKS + COIN_BASE_EXTRA
COIN_MIX_WEIGHTS = {"describe": 1, "cell": 4, "count": 4, "letter": 1, "point": 2, "letterbox": 1,
                    "coverread": 2, "photodescribe": 1, "blurdescribe": 1, "rowhas": 2}

