"""lm-evaluation-harness on the project's corpora, with no hub: local JSON task files and YAML task
configs built from a corpus split, then `lm_eval.simple_evaluate` on the model in memory.

Two tasks per corpus (names as users type them after `--lm-eval`):

- `nextline`: multiple choice. The context is up to `context_lines` consecutive non-empty lines of a
  document; the choices are the true next line and three lines drawn (seeded) from other documents of
  the same split; metrics acc and acc_norm (length-normalised).
- `rolling`: rolling log-likelihood of whole documents (truncated to `max_chars`); metrics word and
  byte perplexity and bits per byte, as the harness defines them.

The files depend only on (corpus, split, seed, limits), so two models are scored on the same items.
"""
from __future__ import annotations

import json
import random
from contextlib import contextmanager
from pathlib import Path

from ..errors import ConfigError
from ..utils.stdio import quiet_stderr

TASKS = ("nextline", "rolling")
PREFIX = "layerwise_"


def _lines(text: str) -> list[str]:
    return [ln.rstrip() for ln in text.splitlines() if ln.strip() and len(ln.strip()) >= 8]


def nextline_items(docs, n: int, seed: int, context_lines: int = 6) -> list[dict]:
    rng = random.Random(seed)
    per_doc = [(i, _lines(d.text)) for i, d in enumerate(docs)]
    per_doc = [(i, ls) for i, ls in per_doc if len(ls) > context_lines]
    if len(per_doc) < 2:
        raise ConfigError("the corpus split has too few documents with enough lines for the next-line task")
    pool = [(i, ln) for i, ls in per_doc for ln in ls]
    items = []
    for k in range(n):
        i, ls = per_doc[rng.randrange(len(per_doc))]
        j = rng.randrange(context_lines, len(ls))
        truth = ls[j]
        distractors: list[str] = []
        while len(distractors) < 3:
            di, ln = pool[rng.randrange(len(pool))]
            if di != i and ln != truth and ln not in distractors:
                distractors.append(ln)
        choices = distractors + [truth]
        rng.shuffle(choices)
        items.append({"id": k, "context": "\n".join(ls[j - context_lines:j]) + "\n",
                      "choices": choices, "gold": choices.index(truth)})
    return items


def rolling_items(docs, n: int, max_chars: int = 2000) -> list[dict]:
    return [{"id": k, "text": d.text[:max_chars]} for k, d in enumerate(docs[:n]) if d.text.strip()]


def _yaml(name: str, data: Path, kind: str) -> str:
    common = (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
              "test_split: test\n")
    if kind == "nextline":
        return common + (
            "output_type: multiple_choice\n"
            "doc_to_text: \"{{context}}\"\n"
            "doc_to_choice: \"{{choices}}\"\n"
            "doc_to_target: gold\n"
            "target_delimiter: \"\"\n"
            "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
            "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n")
    return common + (
        "output_type: loglikelihood_rolling\n"
        "doc_to_text: \"\"\n"
        "doc_to_target: \"{{text}}\"\n"
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n")


def build_tasks(directory: str | Path, corpus: str = "stdlib", split: str = "validation", n: int = 200,
                seed: int = 0) -> dict[str, str]:
    """Write task files into `directory`; returns {user name: harness task name}."""
    from ..data import load_corpus

    docs = load_corpus(corpus).split(split)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    names = {}
    for kind in TASKS:
        items = nextline_items(docs, n, seed) if kind == "nextline" else rolling_items(docs, n)
        data = d / f"{kind}.jsonl"
        data.write_text("".join(json.dumps(x) + "\n" for x in items))
        name = f"{PREFIX}{kind}"
        (d / f"{name}.yaml").write_text(_yaml(name, data, kind))
        names[kind] = name
    return names


def parse_tasks(spec: str) -> list[str]:
    tasks = [t.strip() for t in spec.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if not tasks or bad:
        raise ConfigError(f"--lm-eval takes a comma-separated list of {', '.join(TASKS)} (got {spec!r})")
    return tasks


@contextmanager
def _quiet_harness():
    """The harness logs every task config, runs `git` for its version and draws its own bars on the
    terminal; keep that off the user's screen (errors still raise)."""
    import logging
    import os

    loggers = [logging.getLogger(n) for n in ("lm_eval", "lm-eval", "datasets")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        with quiet_stderr():
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old


def run_lm_eval(model, tokenizer, tasks: list[str], corpus: str = "stdlib", split: str = "validation",
                n: int = 200, seed: int = 0, batch_size: int = 8, work_dir: str | Path | None = None) -> dict:
    """{task: {metric: value}} from lm-evaluation-harness on `model` (in memory)."""
    import tempfile

    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise ConfigError("--lm-eval needs lm-evaluation-harness: pip install 'lm_eval[hf]==0.4.13'") from e
    from ..console import info

    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        names = build_tasks(tmp, corpus, split, n, seed)
        info(f"lm-eval: {', '.join(tasks)} on {n} items of {corpus}/{split}")
        with _quiet_harness():
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            res = simple_evaluate(model=lm, tasks=[names[t] for t in tasks],
                                  task_manager=TaskManager(include_path=tmp), log_samples=False,
                                  random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed)
    out = {}
    for t in tasks:
        r = res["results"][names[t]]
        out[t] = {k.split(",")[0]: float(v) for k, v in r.items()
                  if "," in k and not k.split(",")[0].endswith("_stderr") and isinstance(v, (int, float))}
    return out
