"""`layerwise demo`: the shipped reference model through every granularity, end to end.

dense evaluation → Wanda and SparseGPT at 50% (block by block) → mixed-precision GPTQ by LIM order →
depth (Block Influence, 2 blocks, short fine-tune) → width (adaptive KV-group/MLP pruning) → one
comparison: perplexity, agreement with the dense model, size on disk, and prefill/decode speed
measured side by side (with a bfloat16 copy of the dense model as the baseline users deploy) →
the quantized result exported to GGUF with its codes exact and, when llama.cpp is installed, run
there. Every result is saved, reloaded and checked by its own pipeline.
"""
from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table

from .console import console


def _print_card(card: dict) -> None:
    from .console import print_kv

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


def _table(model, card, rep, variants, ppl, agr, speed, nsamples, seqlen, max_windows, speed_repeats, batch):
    """The closing side-by-side table and the results it shows."""
    from .eval.speed import bytes_on_disk

    table = Table(title=f"{model}: {nsamples}x{seqlen} calibration tokens, {max_windows} validation windows "
                        f"(stdlib); speed at batch {batch}, medians of {speed_repeats} interleaved runs",
                  title_justify="left")
    for col in ("model", "what", "perplexity", "Δ vs dense", "top-1 agree", "MB on disk", "prefill ×",
                "decode ×", "time (s)", "output"):
        table.add_column(col)
    base, sd = ppl["dense"], speed["dense"]
    dense_mb = rep.bytes_on_disk / 2**20 if rep.bytes_on_disk else float("nan")
    table.add_row("dense", f"{card.get('parameters', 0):,} params" if card else "-", f"{base:.2f}", "-", "1.000",
                  f"{dense_mb:.1f}", "1.00", "1.00", "-", "-")
    results = {"dense": {"perplexity": base, "speed": sd}}
    for n, (m, what, secs, path) in variants.items():
        mb = bytes_on_disk(m, path) / 2**20
        table.add_row(n, what, f"{ppl[n]:.2f}", f"{100 * (ppl[n] / base - 1):+.1f}%", f"{agr[n]:.3f}",
                      f"{mb:.1f}", f"{speed[n]['prefill'] / sd['prefill']:.2f}",
                      f"{speed[n]['decode'] / sd['decode']:.2f}", f"{secs:.1f}", str(path) if path else "(in memory)")
        results[n] = {"perplexity": ppl[n], "top1_agreement": agr[n], "mb_on_disk": mb, "speed": speed[n],
                      "seconds": secs, "out": str(path) if path else None}
    return table, results


def _deploy(result: Path, outdir: Path, windows) -> dict:
    """Step 7: the quantized result as GGUF (codes exact), checked in llama.cpp when it is installed."""
    from .export import export
    from .export.llamacpp import available, compare
    from .io.load import load_model

    console.rule("7. deploy: the GPTQ result as GGUF for llama.cpp")
    g = export(str(result), "gguf", outdir / "gptq-3.25.gguf", overwrite=True)
    quant = [r for r in g.records if r.source == "codes"]
    out = {"file": str(g.out), "mb": g.bytes / 2**20, "exact": sum(r.exact for r in quant), "quantized": len(quant)}
    console.print(f"{g.out}: {out['mb']:.1f} MiB, {out['exact']}/{out['quantized']} quantized tensors exact "
                  f"({', '.join(sorted({r.type for r in quant}))})")
    if available():
        c = compare(load_model(str(result)).model, g.out, windows[:2])
        out["llamacpp"] = c
        console.print(f"llama.cpp vs layerwise on 2 windows: top-1 agreement {c['top1_agreement']:.4f}, max |Δ logit| "
                      f"{c['max_abs_diff']:.3f} (llama.cpp rounds activations to 8 bits in its Q4_0 kernels)")
    else:
        console.print("llama.cpp is not installed (pip install llama-cpp-python): not run")
    return out


def run_demo(model: str = "zoo:llama-12l", out: str = "runs/demo", max_windows: int = 200,
             nsamples: int = 64, seqlen: int = 256, heal_steps: int = 40, speed_repeats: int = 5) -> dict:
    from .console import print_kv
    from .data.tokens import eval_windows
    from .eval import agreement, evaluate, perplexity
    from .eval.speed import side_by_side
    from .io.load import load_model
    from .pipeline.depth import depth
    from .pipeline.prune import prune
    from .pipeline.quantize import quantize
    from .pipeline.width import width

    t0 = time.perf_counter()
    console.rule(f"[bold]layerwise demo: {model}")
    dense = load_model(model)
    card = dense.card or {}
    _print_card(card)
    console.rule("1. dense model")
    rep = evaluate(dense, data="stdlib", split="validation", max_windows=max_windows)
    print_kv(f"dense evaluation ({max_windows} validation windows)", rep.rows())
    windows = eval_windows("stdlib", dense.tokenizer, 256, "validation", max_windows)
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    calib = dict(nsamples=nsamples, seqlen=seqlen)
    # name -> (model, what was done, seconds, output directory)
    variants: dict[str, tuple] = {}

    for method in ("wanda", "sparsegpt"):
        console.rule(f"2. {method} at 50% unstructured")
        res = prune(load_model(model), method=method, sparsity=0.5, out=outdir / f"{method}-50", overwrite=True,
                    **calib)
        variants[f"{method} 50%"] = (res.model, f"{res.plan.measured_sparsity():.1%} zeros",
                                     res.timings["total_s"], res.out)

    console.rule("3. mixed-precision GPTQ, 3.25 average bits, most important blocks (LIM) at 4 bits")
    q = quantize(load_model(model), bits=3.25, high=4, low=2, order="lim", quantizer="gptq",
                 out=outdir / "gptq-3.25", overwrite=True, **calib)
    variants["gptq 3.25 bits"] = (q.model, f"{q.bits['effective_bits_quantized']:.2f} effective bits",
                                  q.timings["total_s"], q.out)

    console.rule(f"4. depth: remove 2 blocks by Block Influence, fine-tune {heal_steps} steps")
    d = depth(load_model(model), remove=2, select="bi", heal="finetune", steps=heal_steps, global_batch=8,
              out=outdir / "depth-2", overwrite=True)
    variants["depth -2 blocks"] = (d.model, f"blocks {d.removed} removed", d.timings.get("total_s", 0.0), d.out)

    console.rule("5. width: 70% of block parameters kept, adaptive per-block widths")
    w = width(load_model(model), params=0.7, adaptive=True, out=outdir / "width-70", overwrite=True)
    variants["width 70%"] = (w.model, f"{w.params_after / w.params_before:.1%} of block params",
                             w.timings.get("total_s", 0.0), w.out)

    console.rule("6. quality and speed, side by side")
    import copy

    import torch

    variants["dense bf16"] = (copy.deepcopy(dense.model).to(torch.bfloat16).eval(), "bfloat16 copy", 0.0, None)
    models = {"dense": dense.model, **{n: v[0].eval() for n, v in variants.items()}}
    ppl = {"dense": rep.perplexity.perplexity}
    ppl.update({n: perplexity(m, windows, 8, description=f"perplexity {n}").perplexity
                for n, m in models.items() if n != "dense"})
    agr = {n: agreement(m, dense.model, windows).top1_agreement for n, m in models.items() if n != "dense"}
    prompt = windows[:8]   # a batch, so that one timing rises above timer and scheduler noise
    speed = side_by_side(models, prompt, repeats=speed_repeats)

    table, results = _table(model, card, rep, variants, ppl, agr, speed, nsamples, seqlen, max_windows,
                            speed_repeats, prompt.shape[0])
    console.print(table)
    console.print("Unstructured zeros are stored densely and the quantized model runs dequantized in "
                  "transformers, so only depth and width change the speed there; every output directory has a "
                  "report.html with per-layer plots and a plan.json that replays the decisions.")
    results["gguf"] = _deploy(q.out, outdir, windows)
    console.print(f"demo finished in {time.perf_counter() - t0:.1f} s; outputs in {outdir}/")
    return results
