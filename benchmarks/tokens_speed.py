"""Real prefill and decode speed of token routing on a random-weight Llama of realistic width.

Speed does not depend on the weights, so a random model with realistic widths is right here. Dense
and routed forwards alternate (A B A B ...) in one process, medians of `--repeats` after a warm-up;
speed-ups are ratios measured side by side. Routed: FTP's router (the 4 features, attention of the
previous block from hooked q/k: from all its queries, or from the last one only) and the static router, uniform schedules at 30% and 40% mean token
sparsity; the FLOPs-ideal speed-up is the analytic dense/routed FLOPs ratio (router overhead
included). Decode: tokens/s of greedy generation after a prompt, cache policy decode_dense_last.

    python benchmarks/tokens_speed.py [--hidden 1024 --layers 4] [--lengths 256,512,1024,2048,4096]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import FIG, md_table, update_section  # noqa: E402


def build(hidden, layers, heads, kv, mlp):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv, intermediate_size=mlp, vocab_size=4096,
                      max_position_embeddings=8192)
    return LlamaForCausalLM(cfg).eval()


def timed(fn, repeats):
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def prefill(model, lengths, configs, repeats):
    from layerwise.tokens import TokenRouting
    from layerwise.tokens.flops import dense_flops, forward_flops
    from layerwise.tokens.search import uniform_schedule

    L = model.config.num_hidden_layers
    rows = []
    for n in lengths:
        x = torch.randint(0, 4096, (1, n), generator=torch.Generator().manual_seed(n))
        routings = {}
        for name, sel, s in configs:
            routings[(name, s)] = TokenRouting(model, sel, uniform_schedule(L, s), record=True)
        times = {k: [] for k in [("dense", 0.0), *routings]}
        with torch.inference_mode():
            model(input_ids=x, use_cache=False)
            for _ in range(repeats):                      # A B C A B C ...: drift hits all alike
                for key in times:
                    r = routings.get(key)
                    if r is not None:
                        r.install()
                    t0 = time.perf_counter()
                    model(input_ids=x, use_cache=False)
                    times[key].append(time.perf_counter() - t0)
                    if r is not None:
                        kept = [[int(r.state.kept[i].sum())] if i in r.state.kept else [n] for i in range(L)]
                        r.remove()
                        r.kept_counts = kept
        dense_t = statistics.median(times[("dense", 0.0)])
        for (name, s), r in routings.items():
            rp = r.selector.router_params_per_token()
            fl = forward_flops(model, r.kept_counts, n, att_feature=r.selector.needs_attention, router_params=rp,
                               pruned_sites=[i for i, d in enumerate(r.drop) if d > 0])
            ideal = dense_flops(model, 1, n) / fl
            t = statistics.median(times[(name, s)])
            rows.append({"length": n, "selector": name, "sparsity": s, "dense_tok_s": n / dense_t,
                         "routed_tok_s": n / t, "speedup": dense_t / t, "flops_ideal": ideal,
                         "share_of_ideal": (dense_t / t) / ideal})
            print(f"n={n} {name} {s:.0%}: {dense_t / t:.3f}x (ideal {ideal:.3f}x)", flush=True)
    return rows


def decode(model, configs, prompt, new, repeats):
    from layerwise.tokens import TokenRouting
    from layerwise.tokens.search import uniform_schedule

    L = model.config.num_hidden_layers
    x = torch.randint(0, 4096, (1, prompt), generator=torch.Generator().manual_seed(1))
    gen = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, use_cache=True)
    out = []
    with torch.inference_mode():
        dense = statistics.median(timed(lambda: model.generate(x, **gen), repeats))
        for name, sel, s in configs:
            with TokenRouting(model, sel, uniform_schedule(L, s)):
                t = statistics.median(timed(lambda: model.generate(x, **gen), repeats))
            out.append({"selector": name, "sparsity": s, "prompt": prompt, "new": new,
                        "dense_s": dense, "routed_s": t, "speedup": dense / t})
            print(f"generate {prompt}+{new} {name} {s:.0%}: {dense / t:.3f}x", flush=True)
    return out


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for key in sorted({(r["selector"], r["sparsity"]) for r in rows}):
        rs = [r for r in rows if (r["selector"], r["sparsity"]) == key]
        ax.plot([r["length"] for r in rs], [r["speedup"] for r in rs], marker="o", label=f"{key[0]} {key[1]:.0%}")
        ax.plot([r["length"] for r in rs], [r["flops_ideal"] for r in rs], ls=":", color=ax.lines[-1].get_color())
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel("prefill speed-up vs dense (dotted: FLOPs-ideal)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    from layerwise.tokens import TOKEN_SELECTORS

    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv", type=int, default=4)
    ap.add_argument("--mlp", type=int, default=2816)
    ap.add_argument("--lengths", default="256,512,1024,2048,4096")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    model = build(a.hidden, a.layers, a.heads, a.kv, a.mlp)
    ftp = TOKEN_SELECTORS.create("ftp")
    ftp.build(model)
    ftp_last = TOKEN_SELECTORS.create("ftp", attention="last")
    ftp_last.build(model)
    static = TOKEN_SELECTORS.create("static")
    configs = [("ftp", ftp, 0.3), ("ftp", ftp, 0.4), ("ftp attention=last", ftp_last, 0.4), ("static", static, 0.4)]
    rows = prefill(model, [int(x) for x in a.lengths.split(",")], configs, a.repeats)
    dec = decode(model, [configs[1], configs[3]], 512, 32, a.repeats)
    cross = {}
    for key in sorted({(r["selector"], r["sparsity"]) for r in rows}):
        wins = [r["length"] for r in rows if (r["selector"], r["sparsity"]) == key and r["speedup"] > 1]
        cross[f"{key[0]} {key[1]:.0%}"] = ", ".join(map(str, wins)) or "none"
    body = (f"Random-weight Llama: hidden {a.hidden}, {a.layers} blocks, {a.heads} heads / {a.kv} KV heads, MLP "
            f"{a.mlp}; batch 1; medians of {a.repeats} alternating runs after a warm-up.\n\n"
            + md_table(["prompt", "selector", "token sparsity", "dense tok/s", "routed tok/s", "speed-up",
                        "FLOPs-ideal", "share of ideal"],
                       [[r["length"], r["selector"], f"{r['sparsity']:.0%}", r["dense_tok_s"], r["routed_tok_s"],
                         r["speedup"], r["flops_ideal"], r["share_of_ideal"]] for r in rows])
            + "\n\nPrompt lengths at which routing is faster than dense: "
            + "; ".join(f"{k}: {v}" for k, v in cross.items())
            + "\n\nDecode (greedy, KV cache, policy decode_dense_last: every new token is computed by every block):\n\n"
            + md_table(["selector", "token sparsity", "prompt + new", "dense s", "routed s", "speed-up"],
                       [[d["selector"], f"{d['sparsity']:.0%}", f"{d['prompt']}+{d['new']}", d["dense_s"],
                         d["routed_s"], d["speedup"]] for d in dec]))
    print(body)
    if not a.no_write:
        out = Path(__file__).resolve().parent / "results" / "tokens_speed.json"
        out.write_text(json.dumps({"prefill": rows, "decode": dec}, indent=1))
        FIG.mkdir(parents=True, exist_ok=True)
        plot(rows, FIG / "tokens_speed.png")
        update_section("tokens_speed", body + "\n\n![prefill speed-up](docs/figures/tokens_speed.png)\n",
                       "Token routing: real prefill and decode speed")


if __name__ == "__main__":
    main()
