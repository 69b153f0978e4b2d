from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layerwise.data import Document, calibration_samples, eval_windows, load_corpus, token_stream
from layerwise.data.corpora import Corpus
from layerwise.errors import DataError


def test_stdlib_corpus_split_is_deterministic_and_disjoint():
    a = load_corpus("stdlib")
    info = a.split_info()
    assert info["documents"] > 300 and info["characters"] > 5_000_000
    ids = {s: {d.id for d in a.split(s)} for s in ("train", "validation", "test")}
    assert not (ids["train"] & ids["validation"]) and not (ids["train"] & ids["test"])
    assert sum(len(v) for v in ids.values()) == info["documents"]
    assert not any("/test/" in i or "idlelib" in i for i in ids["train"])
    assert any(i.startswith("pydoc_data.topics/") for s in ids.values() for i in s)
    # A fresh, uncached load gives the same split hashes.
    from layerwise.data.corpora import load_stdlib
    assert load_stdlib().split_info() == info


@given(st.lists(st.text(min_size=1, max_size=40).filter(str.strip), min_size=1, max_size=30, unique=True))
@settings(max_examples=40, deadline=None)
def test_split_depends_on_content_only(texts):
    docs = [Document(id=f"d{i}", text=t) for i, t in enumerate(texts)]
    shuffled = [Document(id=f"x{i}", text=t) for i, t in enumerate(reversed(texts))]
    c1, c2 = Corpus("a", docs), Corpus("b", shuffled)
    by_text = lambda c: {d.text: d.split for d in c.documents}  # noqa: E731
    assert by_text(c1) == by_text(c2)
    assert c1.split_info()["train"]["sha256"] == c2.split_info()["train"]["sha256"]


def test_text_sources(tmp_path):
    (tmp_path / "a.txt").write_text("alpha beta\n\n" * 200)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("gamma delta\n" * 50)
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81" * 10)
    folder = load_corpus(f"text:{tmp_path}")
    assert folder.meta["files"] == 3 and folder.meta["skipped_not_utf8"] == 1
    assert len(folder.documents) == 2
    one = load_corpus(f"text:{tmp_path / 'a.txt'}")
    assert "".join(d.text for d in one.documents).count("alpha") == 200
    glob = load_corpus(f"text:{tmp_path}/**/*.md")
    assert len(glob.documents) == 1


@pytest.mark.parametrize("spec, message", [
    ("text:/nonexistent/file.txt", "does not exist"),
    ("nosuchsource:foo", "unknown corpus"),
    ("text:", "needs an argument"),
])
def test_bad_sources(spec, message):
    with pytest.raises(DataError, match=message):
        load_corpus(spec)


def test_empty_and_unreadable_files(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n ")
    with pytest.raises(DataError, match="empty"):
        load_corpus(f"text:{tmp_path / 'empty.txt'}")
    (tmp_path / "bin.dat").write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(DataError, match="not UTF-8"):
        load_corpus(f"text:{tmp_path / 'bin.dat'}")
    d = tmp_path / "nothing"
    d.mkdir()
    with pytest.raises(DataError, match="no text files"):
        load_corpus(f"text:{d}")
    if os.geteuid() != 0:  # root reads everything
        p = tmp_path / "secret.txt"
        p.write_text("x")
        p.chmod(0)
        with pytest.raises(DataError, match="permission denied"):
            load_corpus(f"text:{p}")


def test_hf_source_unreachable_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="cannot load dataset hf:surely-not-a-dataset-xyz"):
        load_corpus("hf:surely-not-a-dataset-xyz")


def test_calibration_sampler(zoo_tokenizer):
    a = calibration_samples("stdlib", zoo_tokenizer, nsamples=8, seqlen=64, seed=3)
    b = calibration_samples("stdlib", zoo_tokenizer, nsamples=8, seqlen=64, seed=3)
    c = calibration_samples("stdlib", zoo_tokenizer, nsamples=8, seqlen=64, seed=4)
    assert a.shape == (8, 64) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Every sample is a contiguous window of the train stream.
    stream = token_stream("stdlib", zoo_tokenizer, "train")
    row = a[0]
    hits = (stream.unfold(0, 64, 1) == row).all(1).nonzero()
    assert hits.numel() >= 1


@given(n=st.integers(1, 6), L=st.integers(2, 128), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=25, deadline=None)
def test_calibration_shapes_any_request(zoo_tokenizer, n, L, seed):
    x = calibration_samples("stdlib", zoo_tokenizer, nsamples=n, seqlen=L, seed=seed)
    assert x.shape == (n, L) and int(x.max()) < len(zoo_tokenizer)


def test_calibration_errors(tmp_path, zoo_tokenizer):
    with pytest.raises(DataError, match="nsamples"):
        calibration_samples("stdlib", zoo_tokenizer, nsamples=0)
    (tmp_path / "short.txt").write_text("just a few words")
    with pytest.raises(DataError, match="fewer than one window"):
        calibration_samples(f"text:{tmp_path / 'short.txt'}", zoo_tokenizer, nsamples=2, seqlen=512,
                            split="all")


def test_eval_windows_are_the_stream_in_order(zoo_tokenizer):
    w = eval_windows("stdlib", zoo_tokenizer, seqlen=100, split="validation", max_windows=5)
    stream = token_stream("stdlib", zoo_tokenizer, "validation")
    assert torch.equal(w.reshape(-1), stream[:500])
