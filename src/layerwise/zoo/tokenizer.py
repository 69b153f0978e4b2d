"""Byte-level BPE tokenizer trained with `tokenizers` on a corpus split, wrapped for transformers."""
from __future__ import annotations

from ..data.corpora import Corpus

EOS = "<|endoftext|>"


def train_bpe(corpus: Corpus, vocab_size: int = 4096, split: str = "train"):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    docs = corpus.split(split)
    tok.train_from_iterator((d.text for d in docs), trainer=trainer, length=len(docs))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   pad_token=EOS, model_max_length=1_000_000)
    return fast
