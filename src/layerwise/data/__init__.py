"""Offline text corpora, deterministic splits and calibration samples."""
from .corpora import SOURCES, SPLITS, Corpus, Document, load_corpus
from .tokens import calibration_samples, eval_windows, token_stream, tokenizer_fingerprint

__all__ = ["SOURCES", "SPLITS", "Corpus", "Document", "load_corpus", "calibration_samples",
           "eval_windows", "token_stream", "tokenizer_fingerprint"]
