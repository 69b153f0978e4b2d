"""Captions of digit canvases for the CLIP-style zoo model: the text tower reads a short sentence naming
the digit, by word or by numeral, in one of several templates.

Training captions use the `TRAIN_TEMPLATES`; zero-shot classification embeds the class prompts of
`ZERO_SHOT_TEMPLATES` (sentences the model never saw in training, made of words it did see) and
averages them per class, as CLIP's prompt ensembles do. Word-level vocabulary, fixed length (padded
after `<eos>`, whose position the text tower pools).
"""
from __future__ import annotations

import torch

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NUMERALS = [str(i) for i in range(10)]
TRAIN_TEMPLATES = ["a photo of the digit {w}", "a handwritten {w}", "the number {n}", "an image of a {n}",
                   "a picture showing the number {w}", "this is a {w}", "a noisy photo of a {n}",
                   "the digit {n} written by hand"]
ZERO_SHOT_TEMPLATES = ["a picture of the digit {n}", "a photo showing a {w}", "the handwritten number {w}",
                       "an image of the number {n}"]
SPECIALS = ["<pad>", "<bos>", "<eos>"]
PAD, BOS, EOS = range(3)
_FILLERS = sorted({w for t in TRAIN_TEMPLATES + ZERO_SHOT_TEMPLATES for w in t.split() if not w.startswith("{")})
VOCAB = SPECIALS + _FILLERS + WORDS + NUMERALS
LENGTH = 10          # <bos> + at most 7 words + <eos> + padding


def caption(template: str, digit: int) -> str:
    return template.format(w=WORDS[digit], n=NUMERALS[digit])


def encode(texts: list[str]) -> torch.Tensor:
    """[N, LENGTH] ids: `<bos> words <eos> <pad>...`."""
    index = {t: i for i, t in enumerate(VOCAB)}
    out = torch.full((len(texts), LENGTH), PAD, dtype=torch.long)
    for r, text in enumerate(texts):
        ids = [BOS] + [index[w] for w in text.split()] + [EOS]
        out[r, :len(ids)] = torch.tensor(ids)
    return out


def training_captions(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One caption per label, each in a template drawn from the training templates."""
    pick = torch.randint(0, len(TRAIN_TEMPLATES), (len(labels),), generator=generator)
    return encode([caption(TRAIN_TEMPLATES[int(t)], int(y)) for t, y in zip(pick, labels)])


def class_prompts(templates: list[str] | None = None) -> torch.Tensor:
    """[T * 10, LENGTH] ids: every template for digits 0..9 (template-major)."""
    templates = templates or ZERO_SHOT_TEMPLATES
    return encode([caption(t, d) for t in templates for d in range(10)])
