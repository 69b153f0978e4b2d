"""The filler-token key-value task: a test bed whose token redundancy is known.

A sequence of `length` tokens is mostly filler words; among them sit `pairs` key/value records (one
token each, standing for a key and its value; keys distinct within a sequence). It ends with a query
section `[Q] k v [Q] k v ...`: at each queried key the model must predict that key's value, which it
can only read from the matching record. Only the pairs, the first token and the
query are informative, so the oracle keep-set of a token pruner is known, and its recall of
informative tokens is a direct measurement. Everything is generated from (seed, step): no download.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

PAD, BOS, QUERY = 0, 1, 2
KEYS = 16
VALUES = 16
FILLERS = 29
KEY0 = 3
VALUE0 = KEY0 + KEYS
FILLER0 = VALUE0 + VALUES
RECORD0 = FILLER0 + FILLERS        # record token of (key k, value v): RECORD0 + k * VALUES + v
VOCAB = RECORD0 + KEYS * VALUES    # 320


@dataclass
class FillerBatch:
    ids: torch.Tensor              # [B, N]
    informative: torch.Tensor      # [B, N] bool: BOS, the records and the query section
    answer_pos: torch.Tensor       # [Q] positions whose next token is a queried value
    answer: torch.Tensor           # [B, Q] those values


def vocabulary() -> list[str]:
    words = ["[PAD]", "[BOS]", "[Q]"] + [f"k{i}" for i in range(KEYS)] + [f"v{i}" for i in range(VALUES)]
    return words + [f"f{i}" for i in range(FILLERS)] + [f"k{k}={v}" for k in range(KEYS) for v in range(VALUES)]


def filler_batch(step: int, batch: int, seed: int = 0, length: int = 128, pairs: int = 12, queries: int = 4,
                 split: str = "train") -> FillerBatch:
    """The batch of `step` (a pure function of seed, split and step). The sequence ends with a query
    section `[Q] k v [Q] k v ...`: each query key is followed by its value, which the position of
    the key must predict."""
    salt = {"train": 0, "validation": 1, "test": 2}[split]
    # torch seeds its CPU generator from 32 bits: keep (seed, split, step) inside them
    g = torch.Generator().manual_seed(((seed * 3 + salt) * 1_000_003 + step) % (2**32))
    body = length - 3 * queries
    ids = FILLER0 + torch.randint(0, FILLERS, (batch, length), generator=g)
    ids[:, 0] = BOS
    informative = torch.zeros(batch, length, dtype=torch.bool)
    informative[:, 0] = True
    informative[:, body:] = True
    qpos = body + 3 * torch.arange(queries)          # [Q] markers
    ids[:, qpos] = QUERY
    answer = torch.empty(batch, queries, dtype=torch.long)
    for b in range(batch):
        p = 1 + torch.randperm(body - 1, generator=g)[:pairs].sort().values
        keys = torch.randperm(KEYS, generator=g)[:pairs]
        vals = torch.randint(0, VALUES, (pairs,), generator=g)
        ids[b, p] = RECORD0 + keys * VALUES + vals
        informative[b, p] = True
        q = torch.randperm(pairs, generator=g)[:queries]
        ids[b, qpos + 1] = KEY0 + keys[q]
        ids[b, qpos + 2] = VALUE0 + vals[q]
        answer[b] = VALUE0 + vals[q]
    return FillerBatch(ids, informative, qpos + 1, answer)


def tokenizer():
    """A word-level tokenizer of the task's 64 symbols (for decoding, saving and the CLI)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(WordLevel(vocab, unk_token="[PAD]"))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", unk_token="[PAD]")


def answer_logits(logits: torch.Tensor, batch: FillerBatch) -> torch.Tensor:
    """[B, Q, values] logits of the value tokens at the answer positions."""
    return logits[:, batch.answer_pos, VALUE0:VALUE0 + VALUES]


def task_loss(logits: torch.Tensor, batch: FillerBatch) -> torch.Tensor:
    a = answer_logits(logits, batch)
    return torch.nn.functional.cross_entropy(a.reshape(-1, VALUES), (batch.answer - VALUE0).reshape(-1))


@torch.no_grad()
def answer_accuracy(model, batch: FillerBatch, chunk: int = 64) -> float:
    """Share of queried values predicted right (argmax over the value tokens)."""
    right = 0
    for s in range(0, batch.ids.shape[0], chunk):
        part = FillerBatch(batch.ids[s:s + chunk], batch.informative[s:s + chunk], batch.answer_pos,
                           batch.answer[s:s + chunk])
        logits = model(input_ids=part.ids, use_cache=False).logits
        right += int((answer_logits(logits, part).argmax(-1) + VALUE0 == part.answer).sum())
    return right / batch.answer.numel()
