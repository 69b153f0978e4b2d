"""`layerwise demo`: the shipped reference model, its card, and an evaluation.

Later stages (pruning, quantization, depth/width) extend this into the full pipeline.
"""
from __future__ import annotations

import time

from .console import console


def run_demo(model: str = "zoo:llama-12l", max_windows: int = 200) -> dict:
    from .cli.common import print_kv
    from .eval import evaluate
    from .models import load_model

    t0 = time.perf_counter()
    console.rule(f"[bold]layerwise demo: {model}")
    lm = load_model(model)
    card = lm.card or {}
    if card.get("training"):
        t, e = card["training"], card["eval"]
        print_kv(f"model card: {card['name']}", [
            ("architecture", f"{card['architecture']} ({card['parameters']:,} parameters)"),
            ("config", ", ".join(f"{k}={v}" for k, v in sorted(card["config"].items()))),
            ("corpus", f"{card['corpus']['source']} (Python {card['corpus'].get('python')}), "
                       f"{card['corpus']['characters']:,} characters"),
            ("training", f"{t['steps']:,} steps, {t['tokens_seen']:,} tokens, seed {t['seed']}, "
                         f"{t['wall_time_s'] / 60:.1f} min on {t['machine']}"),
            ("validation perplexity (card)", f"{e['perplexity']:.3f} over {e['windows']} windows"),
        ])
    rep = evaluate(lm, data="stdlib", split="validation", max_windows=max_windows)
    print_kv(f"evaluation ({max_windows} validation windows)", rep.rows())
    console.print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return rep.to_dict()
