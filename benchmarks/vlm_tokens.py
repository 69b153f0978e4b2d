"""Vision-token pruning in a LLaVA-style model: CoViPAL against FastV and random.

Quality: `zoo:llava-quadrants` (64 vision tokens, 4 decoder blocks; the asked quadrant's 16 tokens are
the ones that matter). At decoder block K (0, 1 and 2) and keep ratios 0.5 / 0.25 / 0.125: random
(5 selection seeds), FastV (attention of the last query at block K−1, so not at K = 0), CoViPAL stage
1, stage 1+2, and the query-agnostic module (the same net without the question, stage 1+2), each
module trained with `--train-seeds` seeds (the report says how many each K had). Answer accuracy over
5 seeded draws of 256 test questions (mean ± std over the draws; with several training seeds, mean ±
std over them) and oracle recall of the relevant tokens among the kept ones (recall@k = |kept ∩ relevant| / min(k, 16)).

Speed: a random-weight LLaVA with realistic widths (decoder hidden 1024, 8 blocks, GQA 16/4, MLP 2816;
CLIP tower hidden 256, 2 blocks, patch 14) at 144 and 576 vision tokens + 32 text tokens, batch 1:
prefill time of dense, FastV and CoViPAL at K = 2, keep 0.25 (module included), medians of
alternating runs, and peak RSS of each in its own process.

    python benchmarks/vlm_tokens.py [--stage1 800 --stage2 300] [--quality-only | --speed-only]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import ROOT, command_line, md_table, update_section  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "vlm_tokens.json"
KEEPS = (0.5, 0.25, 0.125)


def quality(args) -> list[dict]:
    import layerwise
    from layerwise.pipeline.tokens_vlm import evaluate_vlm, train_module, vlm_schedule
    from layerwise.tokens import TOKEN_SELECTORS
    from layerwise.zoo.specs import SPECS

    lm = layerwise.load("zoo:llava-quadrants")
    model, spec = lm.model.eval(), SPECS["llava-quadrants"]
    rows = []
    for site in args.sites:
        for keep in KEEPS:
            drop = vlm_schedule(4, site, keep, TOKEN_SELECTORS.create("random"))
            variants = [(f"random seed {s}", "random", {"seed": s}, 0) for s in range(args.seeds)]
            if site > 0:
                variants += [("fastv", "fastv", {}, 0)]
            train = {"stage1_steps": args.stage1, "batch": args.batch, "lr": args.lr}
            for ts in range(args.train_seeds):
                variants += [("covipal stage 1", "covipal", {**train, "stage2_steps": 0}, ts),
                             ("covipal stage 1+2", "covipal", {**train, "stage2_steps": args.stage2}, ts),
                             ("query-agnostic stage 1+2", "covipal",
                              {**train, "stage2_steps": args.stage2, "text": False}, ts)]
            for label, name, opts, ts in variants:
                sel = TOKEN_SELECTORS.create(name, opts)
                t0 = time.perf_counter()
                if sel.trainable:
                    train_module(model, sel, drop, spec, seed=ts)
                m = evaluate_vlm(model, sel, drop, spec, draws=args.draws)
                m.update(method=label, site=site, keep=keep, train_seed=ts, train_s=time.perf_counter() - t0)
                rows.append(m)
                print(f"K={site} keep={keep:<5} {label:26s} acc {m['accuracy']:.4f} ± {m['accuracy_std']:.4f} "
                      f"(dense {m['accuracy_dense']:.4f}) recall {m.get('oracle_recall', float('nan')):.3f}", flush=True)
    return rows


def big_llava(vision_tokens: int):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    side = int(vision_tokens ** 0.5)
    vc = CLIPVisionConfig(image_size=14 * side, patch_size=14, num_channels=3, hidden_size=256, intermediate_size=1024,
                          num_hidden_layers=2, num_attention_heads=4)
    tc = LlamaConfig(vocab_size=1000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                     num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=4096)
    cfg = LlavaConfig(vision_config=vc, text_config=tc, image_token_id=3, vision_feature_layer=-1,
                      vision_feature_select_strategy="default", image_seq_length=vision_tokens)
    return LlavaForConditionalGeneration(cfg).eval()


def big_inputs(vision_tokens: int, text: int = 32) -> dict:
    g = torch.Generator().manual_seed(1)
    side = int(vision_tokens ** 0.5)
    ids = torch.cat([torch.tensor([[1]]), torch.full((1, vision_tokens), 3),
                     torch.randint(10, 1000, (1, text), generator=g)], dim=1)
    return {"input_ids": ids, "pixel_values": torch.randn(1, 3, 14 * side, 14 * side, generator=g),
            "use_cache": False, "logits_to_keep": 1}


def _routing(model, method: str):
    from layerwise.pipeline.tokens_vlm import vlm_schedule
    from layerwise.tokens import TOKEN_SELECTORS, TokenRouting

    if method == "dense":
        return None
    sel = TOKEN_SELECTORS.create(method)
    if sel.trainable:
        torch.manual_seed(0)
        sel.build(model)          # random module weights: speed does not depend on them
    return TokenRouting(model, sel, vlm_schedule(8, 2, 0.25))


def _peak_job(vision_tokens: int, method: str, q) -> None:
    torch.set_num_threads(2)
    model = big_llava(vision_tokens)
    x = big_inputs(vision_tokens)
    r = _routing(model, method)
    base = _vmhwm()                                  # the model (and the module) resident, nothing run yet
    if r is not None:
        r.install()
    with torch.inference_mode():
        model(**x)
    q.put((base, _vmhwm()))


def _vmhwm() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def speed(args) -> list[dict]:
    from layerwise.eval.speed import interleaved_times

    rows = []
    for n in args.vision_tokens:
        model = big_llava(n)
        x = big_inputs(n)
        routings = {m: _routing(model, m) for m in ("dense", "fastv", "covipal")}
        times = interleaved_times(lambda: model(**x), routings, args.repeats)
        model = routings = None          # freed before the peak-memory processes start
        ctx = mp.get_context("spawn")
        for m in times:
            q = ctx.Queue()
            p = ctx.Process(target=_peak_job, args=(n, m, q))
            p.start()
            base, peak = q.get()
            p.join()
            t = times[m]
            rows.append({"vision_tokens": n, "method": m, "prefill_s": t, "peak_mb": peak, "forward_mb": peak - base,
                         "speedup": times["dense"] / t})
            print(f"{n} vision tokens {m:8s}: prefill {t * 1000:.1f} ms (x{rows[-1]['speedup']:.2f}), peak {peak:.0f} MB "
                  f"(+{peak - base:.0f} MB over the loaded model)", flush=True)
    return rows


def render(res: dict) -> str:
    q, s = res.get("quality", []), res.get("speed", [])
    out = []
    if q:
        dense = q[0]["accuracy_dense"]
        out += ["### Quality: zoo:llava-quadrants (64 vision tokens; the asked quadrant's 16 matter)", "",
                f"Dense answer accuracy {dense:.4f}. Accuracy: mean ± std over {q[0]['draws']} draws of "
                f"{q[0]['questions']} test questions (random: mean over its seeds); recall@k of the relevant tokens. "
                f"Modules trained with the model frozen: stage 1 {res['stage1']} steps, stage 2 {res['stage2']} steps, "
                f"batch {res['batch']}; training seeds per block K: "
                + ", ".join(f"K={k}: {train_seeds([r for r in q if r['site'] == k])}" for k in sorted({r['site'] for r in q}))
                + " (with several, mean ± std over the training seeds).", ""]
        table = []
        for site in sorted({r["site"] for r in q}):
            for keep in KEEPS:
                at = [r for r in q if r["site"] == site and r["keep"] == keep]
                rnd = [r for r in at if r["method"].startswith("random")]
                row = [site, keep, f"{statistics.mean(r['accuracy'] for r in rnd):.3f} "
                                   f"(recall {statistics.mean(r['oracle_recall'] for r in rnd):.2f})"]
                for name in ("fastv", "covipal stage 1", "covipal stage 1+2", "query-agnostic stage 1+2"):
                    rs = [r for r in at if r["method"] == name]
                    if not rs:
                        row.append("n/a (needs block K−1)")
                        continue
                    acc, sd = _spread(rs)
                    row.append(f"{acc:.3f} ± {sd:.3f} (recall {statistics.mean(r['oracle_recall'] for r in rs):.2f})")
                table.append(row)
        out.append(md_table(["block K", "keep", "random", "FastV", "CoViPAL stage 1", "CoViPAL stage 1+2",
                             "query-agnostic module"], table))
        out += ["", verdicts(q)]
    if s:
        out += ["", "### Speed: random-weight LLaVA (decoder hidden 1024, 8 blocks, GQA 16/4; 32 text tokens)", "",
                "Prefill of one question, batch 1, medians of alternating runs; pruning at block 2, keep 0.25; "
                "CoViPAL's module (random weights) included. Peak RSS: each configuration in its own process, one "
                "prefill; 'forward' = peak minus the RSS of the loaded model (the activations and KV of the prefill).",
                "",
                md_table(["vision tokens", "method", "prefill (ms)", "speed-up vs dense", "peak RSS (MB)",
                          "forward (MB)"],
                         [[r["vision_tokens"], r["method"], f"{r['prefill_s'] * 1000:.1f}", f"{r['speedup']:.2f}",
                           f"{r['peak_mb']:.0f}", f"{r.get('forward_mb', float('nan')):.0f}"] for r in s])]
    return "\n".join(out)


def train_seeds(q: list[dict]) -> int:
    return len({r.get("train_seed", 0) for r in q if r["method"].startswith(("covipal", "query"))})


def _spread(rs: list[dict]) -> tuple[float, float]:
    """Mean accuracy and its spread: over training seeds when there are several, else over draws."""
    if len(rs) > 1:
        return statistics.mean(r["accuracy"] for r in rs), statistics.pstdev(r["accuracy"] for r in rs)
    return rs[0]["accuracy"], rs[0]["accuracy_std"]


def verdicts(q: list[dict]) -> str:
    """The measured order of CoViPAL (best stage), FastV and random, and whether the question matters
    (text-conditioned vs query-agnostic module, both stage 1+2: a difference beyond twice the larger
    draw-to-draw standard deviation counts)."""
    lines = []
    for site in sorted({r["site"] for r in q}):
        for keep in KEEPS:
            at = [r for r in q if r["site"] == site and r["keep"] == keep]
            by = {name: _spread([r for r in at if r["method"] == name])
                  for name in ("fastv", "covipal stage 1", "covipal stage 1+2", "query-agnostic stage 1+2")
                  if any(r["method"] == name for r in at)}
            acc = {"random": statistics.mean(r["accuracy"] for r in at if r["method"].startswith("random")),
                   "CoViPAL": max(by["covipal stage 1"][0], by["covipal stage 1+2"][0])}
            if "fastv" in by:
                acc["FastV"] = by["fastv"][0]
            order = " > ".join(sorted(acc, key=acc.get, reverse=True))
            (t, ts), (a, as_) = by["covipal stage 1+2"], by["query-agnostic stage 1+2"]
            noise = 2 * max(ts, as_)
            text = "helps" if t - a > noise else ("hurts" if t - a < -noise else "no measurable difference")
            lines.append(f"K={site}, keep {keep}: {order}; conditioning on the question: {text} ({t:.3f} vs {a:.3f})")
    return "Verdicts (as measured): " + "; ".join(lines) + "."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--train-seeds", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--stage1", type=int, default=800)
    ap.add_argument("--stage2", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--vision-tokens", type=lambda s: [int(x) for x in s.split(",")], default=[144, 576])
    ap.add_argument("--quality-only", action="store_true")
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    res = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not args.render_only:
        if not args.speed_only:
            rows = quality(args)
            kept = [r for r in res.get("quality", []) if r["site"] not in args.sites]   # other sites' earlier rows
            res.update(quality=sorted(kept + rows, key=lambda r: r["site"]), stage1=args.stage1, stage2=args.stage2,
                       batch=args.batch)
        if not args.quality_only:
            res["speed"] = speed(args)
        res.setdefault("commands", [])
        if command_line() not in res["commands"]:
            res["commands"].append(command_line())
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=1))
    body = render(res)
    print(body)
    if not args.no_write:
        update_section("vlm_tokens", body, "Vision-token pruning: CoViPAL vs FastV vs random (LLaVA-style)",
                       commands=res.get("commands") or [command_line()])


if __name__ == "__main__":
    main()
