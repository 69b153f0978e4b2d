"""Architecture search on `zoo:llama-12l`: TAS-searched widths vs the project's adaptive (and uniform) width
pruning at equal block FLOPs, each healed by KD on the same tokens.

    python benchmarks/search_llm.py [--keep 0.5] [--seeds 0,1] [--search-epochs 6] [--steps 80] [--batch 8]

Protocol: adaptive width pruning (Adapt-Pruner shares, Taylor ranks) at --keep of the block parameters sets
the FLOPs budget; TAS then searches KV groups and MLP channels per block (Taylor ranks too, so only the
per-block shape differs) for the band [r − 0.05, r] with r the adaptive model's block-FLOPs ratio; the
searched widths are cut from the dense weights and healed with the width command's KD, same steps, batch,
lr and seed. Validation perplexity on stdlib; speed side by side (prefill and decode tokens/s, medians).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_output_options, command_line, md_table, update_section  # noqa: E402

from layerwise.data import eval_windows  # noqa: E402
from layerwise.eval import perplexity  # noqa: E402
from layerwise.eval.speed import side_by_side  # noqa: E402
from layerwise.io.load import load_model  # noqa: E402
from layerwise.pipeline.search import search  # noqa: E402
from layerwise.pipeline.width import width  # noqa: E402
from layerwise.prune.width import widths  # noqa: E402
from layerwise.search.decoder import block_flops  # noqa: E402
from layerwise.utils.hf import quiet  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "search_llm.json"


def flops_ratio(model, dense) -> float:
    """Block FLOPs per token at 256 tokens, the searched model's measure, of any per-layer-width model."""
    def total(m):
        c = m.config
        hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        out = 0
        for w in widths(m):
            rep = w["num_attention_heads"] // w["num_key_value_heads"]
            out += block_flops(c.hidden_size, hd, rep, w["num_key_value_heads"], w["intermediate_size"], 256)
        return out
    return total(model) / total(dense)


def main() -> None:
    quiet()
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="zoo:llama-12l")
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--search-epochs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--windows", type=int, default=200)
    ap.add_argument("--speed-repeats", type=int, default=5)
    ap.add_argument("--speed-batch", type=int, default=8)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--speed-only", action="store_true",
                    help="time models of the recorded widths (seed 0 of each shape); speed needs no trained weights")
    add_output_options(ap, "search_llm.json")
    a = ap.parse_args()
    if a.render_only:
        render(json.loads(RESULTS.read_text()), write=not a.no_write)
        return
    torch.set_num_threads(2)
    base = load_model(a.model)
    windows = eval_windows("stdlib", base.tokenizer, 256, "validation", a.windows)
    res = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    if not a.speed_only:
        res.update({"command": command_line(), "args": vars(a),
                    "dense": perplexity(base.model, windows, 16).perplexity})
    tokens = a.steps * a.batch * 256
    models = {"dense": base.model}
    if a.speed_only:
        models.update({k: shaped(base.model, res["runs"][f"{k}|{a.seeds.split(',')[0]}"]["widths"])
                       for k in ("adaptive", "uniform", "tas")})
        res["commands"] = res.get("commands", [res.get("command")]) + [command_line()]
    for seed in ([] if a.speed_only else [int(s) for s in a.seeds.split(",")]):
        for kind in ("adaptive", "uniform", "tas"):
            key = f"{kind}|{seed}"
            t0 = time.perf_counter()
            if kind == "tas":
                target = res["runs"][f"adaptive|{seed}"]["flops_ratio"]
                r = search(a.model, flops=target, space="width", epochs=a.search_epochs, tokens=tokens, lr=a.lr,
                           global_batch=a.batch, seed=seed, evaluate=False)
                model, extra = r.model, {"selected": r.genotype.notes.get("selected"),
                                         "search_s": r.timings.get("search_s"), "genotype": r.genotype.choices}
            else:
                r = width(a.model, params=a.keep, adaptive=kind == "adaptive", tokens=tokens, lr=a.lr,
                          global_batch=a.batch, seed=seed)
                model, extra = r.model, {}
            ppl = perplexity(model.eval(), windows, 16).perplexity
            res["runs"][key] = {"perplexity": ppl, "flops_ratio": flops_ratio(model, base.model),
                                "params": sum(p.numel() for p in model.parameters()), "tokens": tokens,
                                "widths": widths(model), "wall_s": time.perf_counter() - t0, **extra}
            print(f"{kind:>9} seed {seed}: block FLOPs {res['runs'][key]['flops_ratio']:.3f} ppl {ppl:.3f}",
                  flush=True)
            RESULTS.parent.mkdir(exist_ok=True)
            RESULTS.write_text(json.dumps(res, indent=1))
            if seed == int(a.seeds.split(",")[0]):
                models[kind] = model
    if not a.no_speed:
        sp = side_by_side(models, windows[:a.speed_batch], repeats=a.speed_repeats)
        res["speed"] = sp
        RESULTS.write_text(json.dumps(res, indent=1))
    render(res, write=not a.no_write)


def shaped(dense, layer_widths: list[dict]):
    """The dense model cut to recorded per-block widths (first units kept: timing does not depend on which)."""
    import copy

    from layerwise.models.adapters.layout import layouts
    from layerwise.prune.width import LayerCut, shrink

    m = copy.deepcopy(dense)
    cuts = [LayerCut(lay.block, list(range(w["num_key_value_heads"], lay.kv_heads)),
                     list(range(w["intermediate_size"], lay.intermediate)))
            for lay, w in zip(layouts(m), layer_widths)]
    return shrink(m, cuts).eval()


def render(res: dict, write: bool = True) -> None:
    rows = []
    for kind in ("adaptive", "uniform", "tas"):
        g = [v for k, v in res["runs"].items() if k.startswith(kind + "|")]
        if not g:
            continue
        ppl = [x["perplexity"] for x in g]
        rows.append([{"adaptive": "adaptive width (Adapt-Pruner shares)", "uniform": "uniform width",
                      "tas": "TAS-searched widths"}[kind],
                     f"{statistics.mean(x['flops_ratio'] for x in g):.3f}",
                     f"{statistics.mean(ppl):.3f}" + (f" ± {statistics.stdev(ppl):.3f}" if len(ppl) > 1 else ""),
                     ", ".join(f"{p:.3f}" for p in ppl), g[0]["tokens"]])
    body = [f"Dense validation perplexity {res['dense']:.3f} ({res['args']['windows']} windows × 256). Every "
            "model is healed by KD from the dense one on the same tokens (same steps, batch, lr, seed).", "",
            md_table(["shape", "block FLOPs ratio", "perplexity (mean ± std)", "per seed", "KD tokens"], rows)]
    diffs = [res["runs"][f"tas|{s}"]["perplexity"] - res["runs"][f"adaptive|{s}"]["perplexity"]
             for s in sorted({k.split("|")[1] for k in res["runs"]}) if f"tas|{s}" in res["runs"]]
    if diffs:
        body += ["", f"TAS − adaptive, same seed: {', '.join(f'{d:+.3f}' for d in diffs)} perplexity "
                 f"({'TAS better' if all(d < 0 for d in diffs) else 'adaptive better' if all(d > 0 for d in diffs) else 'mixed'} "
                 f"on {len(diffs)} seed(s)). The search itself reads {res['args']['search_epochs']} epochs of 256 "
                 "windows × 128 tokens (not counted as KD tokens; its trained weights are discarded: the shape is "
                 "cut from the dense weights)."]
    if "speed" in res:
        sp = res["speed"]
        d = sp["dense"]
        body += ["", f"Speed (batch {res['args']['speed_batch']} × 256-token prompts, medians of "
                 f"{res['args']['speed_repeats']} interleaved runs):", "",
                 md_table(["model", "prefill tok/s", "× dense", "decode tok/s", "× dense"],
                          [[k, round(v["prefill"]), f"{v['prefill'] / d['prefill']:.2f}", round(v["decode"]),
                            f"{v['decode'] / d['decode']:.2f}"] for k, v in sp.items()])]
    text = "\n".join(body)
    print(text)
    if write:
        update_section("search_llm", text, "Architecture search (TAS) on zoo:llama-12l vs width pruning",
                       commands=res.get("commands") or [res.get("command", command_line())])


if __name__ == "__main__":
    main()
