"""Structured speed-ups at a realistic width: a random-weight Qwen2 model with Qwen2.5-0.5B's shape
(hidden 896, 24 blocks, 14/2 heads, MLP 4864; the zoo tokenizer's vocabulary), depth-pruned (−25%,
−33% of the blocks) and width-pruned (−30%, −50% of the block parameters, uniform; MLP widths free or
rounded to multiples of 64 / 128 with `--multiple-of`). Prefill and decode tokens/s of every variant
against the dense model, measured side by side (repetitions interleaved), as a ratio to the ideal
speed-up: the dense model's FLOPs per token over the variant's (prefill: 256-token prompt, head and
attention products included; decode: the same at the decode context).

Random weights are right here: speed depends on shapes, not values (which units go is irrelevant).

    python benchmarks/structured_speed.py
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import ROOT, md_table, update_section  # noqa: E402

from layerwise.eval.speed import side_by_side  # noqa: E402
from layerwise.prune.depth import remove_blocks  # noqa: E402
from layerwise.prune.width import plan_cuts, shrink, unit_scores, widths  # noqa: E402
from layerwise.search.decoder import block_flops  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "structured_speed.json"


def dense_model(blocks: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=4096, hidden_size=896, intermediate_size=4864, num_hidden_layers=blocks,
                      num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg).eval()


def flops(model, seqlen: int) -> float:
    """Matrix FLOPs per token: every block at its own widths, attention over `seqlen`, and the head."""
    c = model.config
    hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    total = 2 * c.hidden_size * c.vocab_size
    for w in widths(model):
        rep = w["num_attention_heads"] // w["num_key_value_heads"]
        total += block_flops(c.hidden_size, hd, rep, w["num_key_value_heads"], w["intermediate_size"], seqlen)
    return total


def variants(dense, depth_cuts: list[float], width_cuts: list[float], multiples: list[int]) -> dict:
    out = {"dense": dense}
    n = dense.config.num_hidden_layers
    for share in depth_cuts:
        k = round(share * n)
        # which blocks go does not matter for speed; the deep ones, as depth pruning usually picks
        out[f"depth −{share:.0%} ({k} of {n} blocks)"] = remove_blocks(copy.deepcopy(dense), range(n - 1 - k, n - 1))
    scores = unit_scores(dense, "magnitude")
    P0 = sum(sum(p.numel() for p in b.parameters() if p.ndim == 2) for b in dense.model.layers)
    # Per-layer widths as adaptive width pruning or a search gives them (a layer importance drawn once,
    # amplitude 0.3): uniform cuts of 4864 channels happen to land on multiples of 128 (3200, 2432)
    importance = torch.rand(n, generator=torch.Generator().manual_seed(0)).tolist()
    for share in width_cuts:
        for mult in multiples:
            m = copy.deepcopy(dense)
            shrink(m, plan_cuts(m, scores, int(round(share * P0)), adaptive=True, importance=importance,
                                amplitude=0.3, multiple_of=mult))
            mlp = [w["intermediate_size"] for w in widths(m)]
            tag = "free" if mult == 1 else f"×{mult}"
            odd = sum(1 for c in mlp if c % 64)
            out[f"width −{share:.0%}, MLP {tag} ({min(mlp)}–{max(mlp)} ch., {odd} of {n} not ×64)"] = m.eval()
    return out


def fixed_cost_note(res: list[dict], f_pre: float, f_dec: float) -> str:
    """Least-squares fit of seconds per token = a + b · FLOPs over all variants: `a` is the part that no
    structural cut removes (per-call dispatch, cache bookkeeping), and why a speed-up falls short of ideal."""
    import numpy as np

    out = []
    rows = [r for r in res if not r["model"].startswith("depth")]     # depth also removes per-block overhead
    for phase, f0 in (("prefill", f_pre), ("decode", f_dec)):
        x = np.array([f0 / r[f"ideal_{phase}"] for r in rows])
        y = np.array([1 / r[phase] for r in rows])
        b, a = np.polyfit(x, y, 1)
        dense = 1 / res[0][phase]
        out.append(f"{phase}: {1e3 * a:.1f} ms of {1e3 * dense:.1f} ms per token ({a / dense:.0%}) do not scale with FLOPs")
    return ("Fit of seconds per token = a + b · FLOPs over the dense and width rows — " + "; ".join(out) + ". A cut of share s of "
            "the FLOPs can at best give 1 / (1 − s·(1 − a/t_dense)) of speed.")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=24)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    dense = dense_model(a.blocks)
    models = variants(dense, [0.25, 1 / 3], [0.3, 0.5], [1, 64, 128])
    prompt = torch.randint(0, 4096, (1, a.prompt), generator=torch.Generator().manual_seed(0))
    speed = side_by_side(models, prompt, repeats=a.repeats, decode_tokens=a.decode)
    ctx = 32 + a.decode // 2                    # mean context of the decode steps
    f_pre, f_dec = flops(dense, a.prompt), flops(dense, ctx)
    rows, res = [], []
    for name, m in models.items():
        s, d = speed[name], speed["dense"]
        ideal_p, ideal_d = f_pre / flops(m, a.prompt), f_dec / flops(m, ctx)
        sp, sd = s["prefill"] / d["prefill"], s["decode"] / d["decode"]
        params = sum(p.numel() for p in m.parameters())
        res.append({"model": name, "params": params, **s, "speedup_prefill": sp, "speedup_decode": sd,
                    "ideal_prefill": ideal_p, "ideal_decode": ideal_d})
        rows.append([name, f"{params / 1e6:.0f}M", f"{s['prefill']:.0f}", f"{sp:.2f}", f"{ideal_p:.2f}",
                     f"{sp / ideal_p:.2f}", f"{s['decode']:.2f}", f"{sd:.2f}", f"{ideal_d:.2f}", f"{sd / ideal_d:.2f}"])
    body = (f"Random-weight Qwen2 with Qwen2.5-0.5B's shape, {a.blocks} blocks (hidden 896, "
            f"14/2 heads, MLP 4864, vocabulary 4096), fp32, 2 threads; prompt 1 × {a.prompt} tokens, {a.decode} "
            f"decode steps with the KV cache; medians of {a.repeats} interleaved rounds. Ideal = dense FLOPs per "
            "token / the variant's (head and attention products included). Width cuts vary per layer (adaptive "
            "allocation with a fixed random layer importance, amplitude 0.3); KV groups (2 per block) go whole, so "
            "−50% also halves the attention in most blocks.\n\n"
            + md_table(["model", "params", "prefill tok/s", "× dense", "ideal", "of ideal", "decode tok/s",
                        "× dense", "ideal", "of ideal"], rows))
    body += "\n\n" + fixed_cost_note(res, f_pre, f_dec)
    print(body)
    if not a.no_write:
        RESULTS.write_text(json.dumps(res, indent=1))
        update_section("structured_speed", body, "Structured speed-ups at the Qwen2.5-0.5B shape",
                       commands=["python benchmarks/structured_speed.py"])


if __name__ == "__main__":
    main()
