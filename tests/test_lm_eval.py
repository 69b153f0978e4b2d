"""`layerwise eval --lm-eval`: lm-evaluation-harness on task files built offline from the corpora."""
from __future__ import annotations

import json

from layerwise.cli import main
from layerwise.eval.lm_eval_tasks import build_tasks


def test_task_files_are_deterministic_and_well_formed(tmp_path):
    a = build_tasks(tmp_path / "a", n=30, seed=1)
    build_tasks(tmp_path / "b", n=30, seed=1)
    for kind in a:
        assert (tmp_path / "a" / f"{kind}.jsonl").read_text() == (tmp_path / "b" / f"{kind}.jsonl").read_text()
    items = [json.loads(ln) for ln in (tmp_path / "a" / "nextline.jsonl").read_text().splitlines()]
    assert len(items) == 30
    for it in items:
        assert len(set(it["choices"])) == 4 and 0 <= it["gold"] < 4 and it["context"].endswith("\n")
    assert {it["gold"] for it in items} == {0, 1, 2, 3}       # the answer is not always in one place


def test_harness_scores_a_trained_model_above_chance(tmp_path, capsys):
    from layerwise.eval import evaluate

    rep = evaluate("zoo:llama-12l", max_windows=2, speed=False, lm_eval=["nextline", "rolling"],
                   lm_eval_items=24)
    nl, roll = rep.lm_eval["nextline"], rep.lm_eval["rolling"]
    assert nl["acc"] > 0.4 and 0 <= nl["acc_norm"] <= 1           # chance is 0.25
    assert 1 < roll["byte_perplexity"] < 4 and roll["bits_per_byte"] > 0


def test_cli_bad_task_is_one_line(capsys):
    code = main(["eval", "zoo:llama-tiny", "--lm-eval", "hellaswag"])
    err = capsys.readouterr().err
    assert code == 2 and "--lm-eval" in err and len(err.strip().splitlines()) == 1
