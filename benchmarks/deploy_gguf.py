"""Where compressed models run: transformers fp32 / bf16 against llama.cpp on GGUF files that
`layerwise export` wrote (F32, F16, and the Q8_0 / Q5_0 / Q4_0 / mixed Q8_0+Q4_0 results of
`layerwise quantize --group-size 32`, whose codes the file holds exactly).

Speed (a random-weight Llama of realistic width, and zoo:llama-12l): prompt tokens/s (one prompt of
`--prompt` tokens) and generation tokens/s (`--new` greedy steps with the KV cache, the prompt
excluded), every variant measured once per round, rounds repeated, medians; 2 threads everywhere.
Quality (zoo:llama-12l only: random weights have none): perplexity through llama.cpp on the same
validation windows, the logits difference to layerwise's own model, and the mixed 8/4-bit plan against
uniform 5-bit (Q5_0) at equal file size.

    python benchmarks/deploy_gguf.py [--hidden 1024 --layers 16] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import md_table, update_section  # noqa: E402

# name, quantize arguments (None = the dense model), export float type
VARIANTS = [
    ("F32", None, "f32"),
    ("F16", None, "f16"),
    ("Q8_0", ["--bits", "8", "--high", "8", "--low", "8"], "f16"),
    ("Q5_0", ["--bits", "5", "--high", "5", "--low", "5"], "f16"),
    ("mixed Q8_0/Q4_0 (5 bits, LIM order)", ["--bits", "5", "--high", "8", "--low", "4", "--order", "lim"], "f16"),
    ("Q4_0", ["--bits", "4", "--high", "4", "--low", "4"], "f16"),
]


def random_model(root: Path, hidden, layers, heads, kv, mlp) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from layerwise import zoo

    tok = zoo.load_tokenizer("llama-12l")
    cfg = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv, intermediate_size=mlp, vocab_size=len(tok),
                      max_position_embeddings=2048, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    m = LlamaForCausalLM(cfg).eval()
    d = root / "random"
    m.save_pretrained(d)
    tok.save_pretrained(d)
    return d


# structured results, exported in F16 and compared with the dense F16 file (random model only)
STRUCTURED = [
    ("F16, depth −25% (4 of 16 blocks)", ["depth", "--remove", "25%", "--select", "last"]),
    ("F16, width −50% (uniform)", ["width", "--keep-params", "0.5", "--nsamples", "8"]),
]


def build_structured(src: str, root: Path) -> dict[str, Path]:
    from layerwise.cli import main
    from layerwise.export import export

    files = {}
    for name, args in STRUCTURED:
        d = root / args[0]
        assert main(args[:1] + [src] + args[1:] + ["--out", str(d)]) == 0
        out = root / f"{args[0]}.gguf"
        export(str(d), "gguf", out, float_type="f16")
        files[name] = (out, str(d))
    return files


def build_files(src: str, root: Path) -> dict[str, Path]:
    from layerwise.cli import main
    from layerwise.export import export

    files = {}
    for name, qargs, ftype in VARIANTS:
        model = src
        if qargs is not None:
            model = str(root / name.split()[0].replace("/", "_"))
            assert main(["quantize", src, "--group-size", "32", "--nsamples", "16", "--seqlen", "128",
                         "--out", model] + qargs) == 0
        out = root / f"{name.split()[0].replace('/', '_')}.gguf"
        export(model, "gguf", out, float_type=ftype)
        files[name] = (out, model)
    return files


@torch.no_grad()
def hf_speed(model, prompt: torch.Tensor, new: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    out = model(input_ids=prompt, use_cache=True)
    t1 = time.perf_counter()
    past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
    t2 = time.perf_counter()
    for _ in range(new):
        out = model(input_ids=tok, past_key_values=past, use_cache=True)
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return t1 - t0, time.perf_counter() - t2


def speed(src: str, files: dict, prompt_len: int, new: int, repeats: int) -> list[dict]:
    from layerwise import load
    from layerwise.export.llamacpp import LlamaCpp

    fp32 = load(src).model.eval()
    bf16 = load(src).model.to(torch.bfloat16).eval()
    vocab = fp32.config.vocab_size
    prompt = torch.randint(1, vocab, (1, prompt_len), generator=torch.Generator().manual_seed(0))
    runs = {name: LlamaCpp(f, n_ctx=prompt_len + new + 8, threads=2) for name, (f, _) in files.items()}
    times: dict[str, dict[str, list]] = {k: {"p": [], "g": []} for k in ["transformers fp32", "transformers bf16",
                                                                        *runs]}
    ids = prompt[0].tolist()
    for r in range(repeats + 1):           # round 0 warms every runtime up
        for name in times:
            if name.startswith("transformers"):
                p, g = hf_speed(fp32 if "fp32" in name else bf16, prompt, new)
            else:
                p, g = runs[name].prompt_seconds(ids), runs[name].generate_seconds(ids, new)
            if r:
                times[name]["p"].append(p)
                times[name]["g"].append(g)
        print(f"round {r} done", flush=True)
    rows = []
    for name, t in times.items():
        size = files[name][0].stat().st_size if name in files else None
        rows.append({"runtime": name, "prompt_tok_s": prompt_len / statistics.median(t["p"]),
                     "gen_tok_s": new / statistics.median(t["g"]), "file_mb": size / 2**20 if size else None})
    for run in runs.values():
        run.close()
    base = {k: next(r for r in rows if r["runtime"] == k) for k in ("transformers fp32", "transformers bf16")}
    for r in rows:
        r["gen_vs_fp32"] = r["gen_tok_s"] / base["transformers fp32"]["gen_tok_s"]
        r["gen_vs_bf16"] = r["gen_tok_s"] / base["transformers bf16"]["gen_tok_s"]
        r["prompt_vs_fp32"] = r["prompt_tok_s"] / base["transformers fp32"]["prompt_tok_s"]
    return rows


@torch.no_grad()
def quality(files: dict, windows: int, seqlen: int) -> list[dict]:
    from layerwise import load, zoo
    from layerwise.data.tokens import eval_windows
    from layerwise.export.llamacpp import LlamaCpp

    ids = eval_windows("stdlib", zoo.load_tokenizer("llama-12l"), seqlen, "validation", windows)
    rows = []
    for name, (f, model_dir) in files.items():
        model = load(model_dir).model.eval()
        run = LlamaCpp(f, n_ctx=seqlen + 8, threads=2)
        nll_cpp, nll_lw, diff, agree = [], [], 0.0, []
        for row in ids:
            ref = torch.log_softmax(model(input_ids=row[None]).logits[0].float(), -1)
            got = torch.log_softmax(torch.from_numpy(run.logits(row.tolist())), -1)
            tgt = row[1:]
            nll_lw.append(float(-ref[:-1].gather(-1, tgt[:, None]).mean()))
            nll_cpp.append(float(-got[:-1].gather(-1, tgt[:, None]).mean()))
            diff = max(diff, float((got - ref).abs().max()))
            agree.append(float((got.argmax(-1) == ref.argmax(-1)).float().mean()))
        run.close()
        rows.append({"variant": name, "file_mb": f.stat().st_size / 2**20,
                     "ppl_llamacpp": float(np.exp(np.mean(nll_cpp))), "ppl_layerwise": float(np.exp(np.mean(nll_lw))),
                     "max_logprob_diff": diff, "top1_agreement": float(np.mean(agree))})
        print(rows[-1], flush=True)
    return rows


def speed_table(rows) -> str:
    return md_table(["runtime", "file MiB", "prompt tok/s", "generation tok/s", "prompt vs fp32",
                     "generation vs fp32", "generation vs bf16"],
                    [[r["runtime"], "" if r["file_mb"] is None else r["file_mb"], r["prompt_tok_s"], r["gen_tok_s"],
                      r["prompt_vs_fp32"], r["gen_vs_fp32"], r["gen_vs_bf16"]] for r in rows])


def findings(out: dict) -> str:
    """The sentences the tables support, computed from them."""
    r = {x["runtime"]: x for x in out["random"]}
    q = {x["variant"]: x for x in out["quality"]}
    mixed = next(k for k in q if k.startswith("mixed"))
    depth = next(k for k in r if "depth" in k)
    width = next(k for k in r if "width" in k)
    rel = max(abs(x["ppl_llamacpp"] / x["ppl_layerwise"] - 1) for x in out["quality"])
    win = "uniform Q5_0" if q["Q5_0"]["ppl_llamacpp"] < q[mixed]["ppl_llamacpp"] else "the mixed plan"
    return (
        f"\n\nReading: on the {out['params'] / 1e6:.0f}M model the 4-bit GGUF generates "
        f"{r['Q4_0']['gen_vs_fp32']:.2f}x as fast as transformers fp32 and {r['Q4_0']['gen_vs_bf16']:.2f}x as fast "
        f"as bf16 (bf16 speeds up transformers' prompt processing {r['transformers bf16']['prompt_vs_fp32']:.1f}x, "
        f"not its generation). llama.cpp's prompt processing is {r['Q4_0']['prompt_vs_fp32']:.2f}x transformers "
        "fp32 here, with llama.cpp kept off its AMX/repacked weight buffers (they crash on this machine; what "
        f"they would add was not measured). Structured results run faster in llama.cpp too: depth −25% "
        f"generates {r[depth]['gen_tok_s'] / r['F16']['gen_tok_s']:.2f}x the dense F16 file (FLOPs-ideal 1.33x), "
        f"width −50% {r[width]['gen_tok_s'] / r['F16']['gen_tok_s']:.2f}x generation and "
        f"{r[width]['prompt_tok_s'] / r['F16']['prompt_tok_s']:.2f}x prompt. At equal file size "
        f"({q['Q5_0']['file_mb']:.2f} MiB) {win} has the lower perplexity through llama.cpp "
        f"({q['Q5_0']['ppl_llamacpp']:.3f} uniform Q5_0 vs {q[mixed]['ppl_llamacpp']:.3f} mixed Q8_0/Q4_0 by LIM "
        f"order; Q4_0 {q['Q4_0']['ppl_llamacpp']:.3f}, F32 {q['F32']['ppl_llamacpp']:.3f}). llama.cpp and layerwise "
        f"agree on every result's perplexity within {100 * rel:.2f}%; the larger log-prob differences of the "
        "quantized files come from llama.cpp rounding activations to 8-bit blocks in its Q4_0/Q5_0/Q8_0 "
        "dot products (the weights are bit-identical, see tests/test_export.py).")


def render(out: dict) -> str:
    a = out.get("args", {"hidden": 1024, "layers": 16, "heads": 16, "kv": 4, "mlp": 3072, "prompt": 256,
                          "new": 32, "repeats": 3, "windows": 32})
    return (f"Random-weight Llama, {out['params'] / 1e6:.0f}M parameters (hidden {a['hidden']}, {a['layers']} blocks, "
            f"{a['heads']}/{a['kv']} heads, MLP {a['mlp']}); prompt {a['prompt']} tokens, {a['new']} generated; "
            f"medians of {a['repeats']} rounds (each runtime once per round) after a warm-up round; llama.cpp "
            "through llama-cpp-python 0.3.36 (built from source here), 2 threads:\n\n" + speed_table(out["random"])
            + "\n\n`zoo:llama-12l` (3.4M parameters: the head and dispatch dominate):\n\n"
            + speed_table(out["llama12l"])
            + f"\n\nQuality on `zoo:llama-12l`, {a['windows']} validation windows × 256 tokens, llama.cpp vs "
            "layerwise's own model of the same result:\n\n"
            + md_table(["variant", "file MiB", "perplexity (llama.cpp)", "perplexity (layerwise)",
                        "max |Δ log-prob|", "top-1 agreement"],
                       [[q["variant"], q["file_mb"], round(q["ppl_llamacpp"], 3), round(q["ppl_layerwise"], 3),
                         q["max_logprob_diff"], q["top1_agreement"]] for q in out["quality"]])
            + findings(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv", type=int, default=4)
    ap.add_argument("--mlp", type=int, default=3072)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--render-only", action="store_true", help="rewrite the section from results/deploy_gguf.json")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    res = Path(__file__).resolve().parent / "results" / "deploy_gguf.json"
    if a.render_only:
        out = json.loads(res.read_text())
    else:
        out = measure(a)
    body = render(out)
    print(body)
    if not a.no_write:
        res.write_text(json.dumps(out, indent=1))
        update_section("deploy_gguf", body, "Deployment: GGUF in llama.cpp vs transformers fp32 / bf16",
                       commands=["python benchmarks/deploy_gguf.py"])


def measure(a) -> dict:
    torch.set_num_threads(2)
    out: dict = {"args": {k: v for k, v in vars(a).items() if k not in ("render_only", "no_write")}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        big = random_model(root, a.hidden, a.layers, a.heads, a.kv, a.mlp)
        params = sum(p.numel() for p in __import__("layerwise").load(str(big)).model.parameters())
        (root / "r").mkdir()
        files = {**build_files(str(big), root / "r"), **build_structured(str(big), root / "r")}
        out["random"] = speed(str(big), files, a.prompt, a.new, a.repeats)
        out["params"] = params
        (root / "z").mkdir()
        files = build_files("zoo:llama-12l", root / "z")
        out["llama12l"] = speed("zoo:llama-12l", files, a.prompt, a.new, a.repeats)
        out["quality"] = quality(files, a.windows, 256)
    return out


if __name__ == "__main__":
    main()
