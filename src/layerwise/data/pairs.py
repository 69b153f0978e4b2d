"""Two-digit canvases and their prompts: the data of the text-conditioned UNet (zoo:unet-digit-pairs).

A canvas is 8 × 16: a left and a right 8 × 8 cell, each either blank (−1) or one digit of a split. Its prompt is a sequence of token ids, `[left, right, FILL, FILL]`:

    0..9    "digit d on the left"       10..19  "digit d on the right"
    20      "left cell blank"           21      "right cell blank"        22  filler

A generator sees the prompt as one-hot encoder states of its cross-attention width (`prompt_states`):
its cross-attention key/value projections of a one-hot token are a learned embedding of that token,
so no separate text encoder is needed and none can be missing from a checkpoint.

Users type prompts as `"3 7"` (3 left, 7 right), `"3 _"` or `"_ 7"` (one digit), several joined by
commas. Consistency of a sample (`eval.generators.pair_consistency`): the judge finds each named digit
in its cell and a cell asked to be blank is blank.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .images import digit_images

LEFT, RIGHT, BLANK_LEFT, BLANK_RIGHT, FILL = 0, 10, 20, 21, 22
VOCAB = 23
PROMPT_LEN = 4
CELL = 8
BLANK_MAX = -0.5        # a cell whose brightest pixel stays below this is blank


def prompt_tokens(left: int | None, right: int | None) -> torch.Tensor:
    if left is None and right is None:
        raise ConfigError("a prompt must name at least one digit")
    return torch.tensor([BLANK_LEFT if left is None else LEFT + left, BLANK_RIGHT if right is None else RIGHT + right,
                         FILL, FILL])


def parse_pair_prompt(prompt: str) -> torch.Tensor:
    """'3 7, 1 _' → [[3, 17, 22, 22], [1, 21, 22, 22]]; a prompt naming no known subject is a ConfigError."""
    rows = []
    for part in str(prompt).split(","):
        words = part.split()
        if not words:
            continue
        if len(words) != 2:
            raise ConfigError(f"--prompt: each prompt is 'LEFT RIGHT' with digits or _ (got {part.strip()!r})")
        digits = []
        for w in words:
            if w == "_":
                digits.append(None)
            elif w.isdigit() and 0 <= int(w) <= 9:
                digits.append(int(w))
            else:
                raise ConfigError(f"--prompt: {w!r} names no known subject (digits 0-9, or _ for a blank cell)")
        rows.append(prompt_tokens(*digits))
    if not rows:
        raise ConfigError(f"--prompt names no known subject: {prompt!r}")
    return torch.stack(rows)


def prompt_states(tokens: torch.Tensor, width: int) -> torch.Tensor:
    """[B, T] token ids → [B, T, width] one-hot encoder states."""
    if width < VOCAB:
        raise ConfigError(f"a cross-attention width of {width} cannot hold the {VOCAB}-token prompt vocabulary")
    return F.one_hot(tokens.long(), width).float()


def compose(left: torch.Tensor | None, right: torch.Tensor | None, n: int) -> torch.Tensor:
    """[n, 1, 8, 16] canvases from 8×8 digits ([n, 1, 8, 8] or None for blank cells)."""
    canvas = torch.full((n, 1, CELL, 2 * CELL), -1.0)
    if left is not None:
        canvas[..., :CELL] = left
    if right is not None:
        canvas[..., CELL:] = right
    return canvas


def pair_batch(split: str, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n canvases with their prompts: a third left-only, a third right-only, a third with both digits
    (drawn per row); digits drawn uniformly from the split."""
    data = digit_images(split)
    kind = torch.randint(0, 3, (n,), generator=g)
    li = torch.randint(0, len(data), (n,), generator=g)
    ri = torch.randint(0, len(data), (n,), generator=g)
    has_l, has_r = kind != 1, kind != 0
    x = compose(data.pixels[li], data.pixels[ri], n)
    x[~has_l, ..., :CELL] = -1.0
    x[~has_r, ..., CELL:] = -1.0
    tokens = torch.stack([torch.where(has_l, LEFT + data.labels[li], torch.full((n,), BLANK_LEFT)),
                          torch.where(has_r, RIGHT + data.labels[ri], torch.full((n,), BLANK_RIGHT)),
                          torch.full((n,), FILL), torch.full((n,), FILL)], 1)
    return x, tokens


def cells(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The left and right 8 × 8 cells of [n, 1, 8, 16] canvases (what the judge reads)."""
    return x[..., :CELL], x[..., CELL:]


def eval_prompts() -> torch.Tensor:
    """The fixed evaluation prompts: every digit alone on the left and on the right, and 20 pairs."""
    g = torch.Generator().manual_seed(2024)
    pairs = torch.randint(0, 10, (20, 2), generator=g)
    rows = [prompt_tokens(d, None) for d in range(10)] + [prompt_tokens(None, d) for d in range(10)]
    return torch.stack(rows + [prompt_tokens(int(a), int(b)) for a, b in pairs])
