"""Structured width pruning: uniform vs adaptive, one-shot vs incremental at equal training tokens.

    python benchmarks/width_quality.py [--model zoo:llama-12l] [--keeps 0.8,0.7,0.5] [--steps 80] [--batch 8]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_output_options, add_speed_options, command_line, md_table, update_section  # noqa: E402

from layerwise.data import eval_windows  # noqa: E402
from layerwise.eval import perplexity  # noqa: E402
from layerwise.eval.speed import side_by_side  # noqa: E402
from layerwise.io.load import load_model  # noqa: E402
from layerwise.pipeline.width import width  # noqa: E402
from layerwise.prune.width import widths  # noqa: E402
from layerwise.utils.hf import quiet  # noqa: E402


def main() -> None:
    quiet()
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="zoo:llama-12l")
    ap.add_argument("--keeps", default="0.8,0.7,0.5")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--step", type=float, default=0.05)
    ap.add_argument("--criterion", default="taylor")
    ap.add_argument("--windows", type=int, default=300)
    add_speed_options(ap)
    ap.add_argument("--speed-only", action="store_true",
                    help="keep the perplexity table of benchmarks/results/width_NAME.json; re-prune one-shot "
                         "(no training: healing does not change shapes) and measure speed only")
    add_output_options(ap, "width_NAME.json")
    a = ap.parse_args()
    if a.render_only:
        render(a.model.replace("zoo:", ""), write=not a.no_write)
        return
    keeps = [float(x) for x in a.keeps.split(",")]
    base = load_model(a.model)
    windows = eval_windows("stdlib", base.tokenizer, 256, "validation", a.windows)
    dense = perplexity(base.model, windows, 16).perplexity
    tokens = a.steps * a.batch * a.seqlen
    work = Path(tempfile.mkdtemp(prefix="width-bench-"))
    kw = dict(criterion=a.criterion, global_batch=a.batch, train_seqlen=a.seqlen, lr=a.lr, nsamples=32)
    res: dict = {}
    models = {}
    t0 = time.perf_counter()
    name = a.model.replace("zoo:", "")
    res_path = ROOT / "benchmarks" / "results" / f"width_{name}.json"
    prev_commands: list = []
    if a.speed_only:
        prev = json.loads(res_path.read_text())
        res, prev_commands = prev["results"], prev.get("commands", [])
        for keep in keeps:
            for label, adaptive in (("uniform", False), ("adaptive", True)):
                out = width(a.model, params=keep, adaptive=adaptive, work_dir=work / f"{keep}-{label}", **kw)
                models[f"{keep:.0%} kept ({label} one-shot)"] = out.model
    for keep in keeps if not a.speed_only else []:
        r = {}
        for name, opts in (("uniform one-shot", dict(adaptive=False)),
                           ("adaptive one-shot", dict(adaptive=True)),
                           ("uniform one-shot + KD", dict(adaptive=False, tokens=tokens)),
                           ("adaptive one-shot + KD", dict(adaptive=True, tokens=tokens)),
                           ("uniform incremental + KD", dict(adaptive=False, incremental=True, step=a.step, tokens=tokens)),
                           ("adaptive incremental + KD", dict(adaptive=True, incremental=True, step=a.step, tokens=tokens))):
            out = width(a.model, params=keep, work_dir=work / f"{keep}-{name.replace(' ', '_')}", **opts, **kw)
            ppl = perplexity(out.model, windows, 16).perplexity
            r[name] = {"ppl": ppl, "kept": out.params_after / out.params_before, "stages": len(out.stages),
                       "widths": widths(out.model)}
            if name == "adaptive incremental + KD":
                models[f"{keep:.0%} kept (adaptive incremental)"] = out.model
            if name == "uniform one-shot + KD":
                models[f"{keep:.0%} kept (uniform one-shot)"] = out.model
            print(f"keep {keep}: {name:28s} ppl {ppl:.3f} kept {r[name]['kept']:.3f} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
        res[str(keep)] = r
    models = {"dense": base.model, **models}
    # a batch of windows so that one timing is long enough to rise above timer and scheduler noise
    prompt = windows[:a.speed_batch]
    sp = side_by_side(models, prompt, repeats=a.speed_repeats)
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    res_path.write_text(
        json.dumps({"dense": dense, "results": res, "speed": sp, "params": params, "args": vars(a),
         "commands": (prev_commands if a.speed_only else []) + [command_line()]}, indent=1))
    render(name, write=not a.no_write)


def verdicts(res: dict) -> str:
    """Plain statements of what the table shows, computed from it."""
    out = []
    for kind in ("one-shot", "one-shot + KD", "incremental + KD"):
        wins = [f"{1 - float(k):.0%}" for k in res if res[k][f"adaptive {kind}"]["ppl"] < res[k][f"uniform {kind}"]["ppl"]]
        out.append(f"adaptive beats uniform ({kind}) at {', '.join(wins) or 'no'} of {len(res)} ratios")
    for alloc in ("uniform", "adaptive"):
        wins = [f"{1 - float(k):.0%}" for k in res
                if res[k][f"{alloc} incremental + KD"]["ppl"] < res[k][f"{alloc} one-shot + KD"]["ppl"]]
        out.append(f"{alloc} incremental beats {alloc} one-shot at equal tokens at {', '.join(wins) or 'no ratio'}")
    return "As measured: " + "; ".join(out) + "."


def render(name: str, write: bool = True) -> None:
    d = json.loads((ROOT / "benchmarks" / "results" / f"width_{name}.json").read_text())
    a = argparse.Namespace(**d["args"])
    res, sp, params, dense = d["results"], d["speed"], d["params"], d["dense"]
    tokens = a.steps * a.batch * a.seqlen
    variants = list(next(iter(res.values())))
    rows = [[f"{1 - float(k):.0%}"] + [f"{res[k][v]['ppl']:.2f}" for v in variants] for k in res]
    body = (f"Model `{a.model}`, dense perplexity {dense:.3f} ({a.windows} validation windows × 256). Units: whole "
            f"KV-head groups (with their query heads and o_proj columns) and MLP channels; criterion "
            f"{a.criterion}; 32 × 256 calibration tokens per pruning step. Healing = logit distillation from the "
            f"dense model (T = 2) with {tokens:,} training tokens in total ({a.steps} steps × {a.batch} × "
            f"{a.seqlen}), one cosine schedule; incremental = stages removing {a.step:.0%} of the original block "
            "parameters each, training shards growing linearly (Adapt-Pruner), same total tokens as one-shot.\n\n"
            + md_table(["fewer block params", *variants], rows) + "\n\n" + verdicts(res)
            + f"\n\nReal speed of the pruned models against the dense one (batch {a.speed_batch}: prefill "
              f"{a.speed_batch} × 256 tokens, decode 64 tokens per sequence with KV cache; medians of "
              f"{a.speed_repeats} interleaved repetitions in one process):\n\n"
            + md_table(["model", "parameters", "prefill tok/s", "× dense", "decode tok/s", "× dense"],
                       [[n, f"{params[n]:,}", f"{v['prefill']:,.0f}", f"{v['prefill'] / sp['dense']['prefill']:.2f}",
                         f"{v['decode']:,.1f}", f"{v['decode'] / sp['dense']['decode']:.2f}"] for n, v in sp.items()]))
    print(body)
    if not a.no_write:
        update_section(f"width-{name}", body, commands=d.get("commands"), title=f"Width pruning: {a.model}")


if __name__ == "__main__":
    main()
