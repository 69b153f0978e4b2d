"""The reference models: training curves and evaluation numbers (re-measured here).

    python benchmarks/zoo_cards.py
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIG, md_table, update_section  # noqa: E402

from layerwise import zoo  # noqa: E402
from layerwise.eval import evaluate  # noqa: E402
from layerwise.utils.hf import quiet  # noqa: E402


def main() -> None:
    quiet()
    FIG.mkdir(parents=True, exist_ok=True)
    rows, figs = [], []
    for name in zoo.shipped():
        card = zoo.info(name)
        if "perplexity" not in card.get("eval", {}):   # task and image models: their cards' own tables
            continue
        rep = evaluate(zoo.load(name), data="stdlib", seqlen=card["eval"]["seqlen"], batch_size=16)
        t = card["training"]
        c = card["config"]
        rows.append([f"`zoo:{name}`", f"{card['parameters']:,}", c["num_hidden_layers"],
                     f"{c['hidden_size']} / {c['intermediate_size']}",
                     f"{c['num_attention_heads']} / {c['num_key_value_heads']}",
                     f"{t['tokens_seen'] / 1e6:.1f}M ({t['epochs']:.1f} ep)", f"{t['wall_time_s'] / 60:.1f}",
                     f"{card['eval']['perplexity']:.3f}", f"{rep.perplexity.perplexity:.3f}",
                     f"{card['eval']['test_perplexity']:.3f}",
                     f"{rep.speed.prefill_tokens_per_s:,.0f}", f"{rep.speed.decode_tokens_per_s:,.0f}",
                     f"{rep.bytes_on_disk / 2**20:.1f}"])
        dst = FIG / f"zoo_{name}_curve.png"
        shutil.copy(zoo.path(name) / "curve.png", dst)
        figs.append(f"![{name} training curve](docs/figures/{dst.name})")
        print(rows[-1], flush=True)
    body = ("Stock `LlamaForCausalLM` models trained deterministically on the `stdlib` corpus (CPython 3.11.7 "
            "standard library, 90/5/5 document split) with a 4096-token byte-level BPE; float32, AdamW, cosine "
            "schedule, batch 16 × 256. `card` = the number written into the model card at the end of "
            "training; `eval` = `layerwise eval zoo:NAME --data stdlib`, re-measured by this benchmark. `train min` is "
            "the wall time as recorded, on a 2-core machine that was also running development work (llama-12l "
            "trains at ~1.2 s per step when alone, ~60 min for its 3000 steps). llama-12l's validation perplexity "
            "was still falling slowly at the end (−1.7% over the last 150 steps, as the cosine schedule "
            "annealed) while its train/validation gap widened; more steps would need a new schedule.\n\n"
            + md_table(["model", "params", "blocks", "hidden / MLP", "heads / kv", "tokens seen", "train min",
                        "val ppl (card)", "val ppl (eval)", "test ppl", "prefill tok/s", "decode tok/s",
                        "MB on disk"], rows)
            + "\n\n" + "\n".join(figs))
    print(body)
    update_section("zoo", body, "Reference models (layerwise zoo)")


if __name__ == "__main__":
    main()
