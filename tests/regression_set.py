"""A reduced set of end-to-end results on zoo:llama-tiny that must not move when the core changes.

`python tests/regression_set.py OUT.json` computes them (run it on two commits to compare);
tests/test_regression.py recomputes them and compares with tests/data/regression_llama_tiny.json,
which was computed on the commit before Core v2 (c0f894a).
"""
from __future__ import annotations

import json
import sys

CAL = dict(nsamples=16, seqlen=128, seed=0)
WINDOWS = 24


def ppl(model, tok) -> float:
    from layerwise.data.tokens import eval_windows
    from layerwise.eval import perplexity

    return round(perplexity(model, eval_windows("stdlib", tok, 256, "validation", WINDOWS), batch_size=8).perplexity, 6)


def compute() -> dict:
    import torch

    from layerwise import load
    from layerwise.pipeline.depth import depth
    from layerwise.pipeline.prune import prune
    from layerwise.pipeline.quantize import quantize
    from layerwise.pipeline.width import width

    torch.set_num_threads(2)
    lm = load("zoo:llama-tiny")
    tok = lm.tokenizer
    res = {"dense": ppl(lm.model, tok)}
    for name, kw in {"magnitude50": dict(method="magnitude", sparsity=0.5),
                     "wanda50": dict(method="wanda", sparsity=0.5),
                     "sparsegpt50": dict(method="sparsegpt", sparsity=0.5),
                     "sparsegpt2:4": dict(method="sparsegpt", sparsity=0.0, nm="2:4"),
                     "wanda60-owl": dict(method="wanda", sparsity=0.6, allocation="owl",
                                         allocation_params={"owl_lambda": 0.08}),
                     "wanda60-alpha": dict(method="wanda", sparsity=0.6, allocation="alpha",
                                           allocation_params={"epsilon": 0.2}),
                     "wanda60-farms": dict(method="wanda", sparsity=0.6, allocation="farms",
                                           allocation_params={"epsilon": 0.2}),
                     "sparsegpt60-ecoflap": dict(method="sparsegpt", sparsity=0.6, allocation="ecoflap",
                                                 allocation_params={"p_max": None})}.items():
        r = prune(load("zoo:llama-tiny"), **kw, **CAL)
        res[name] = ppl(r.model, tok)
    for name, kw in {"rtn4": dict(bits=4, high=4, low=4, quantizer="rtn"),
                     "gptq3-lim": dict(bits=3, high=4, low=2, quantizer="gptq", order="lim"),
                     "gptq3-act": dict(bits=3, high=3, low=3, quantizer="gptq", act_order=True)}.items():
        r = quantize(load("zoo:llama-tiny"), group_size=64, **kw, **CAL)
        res[name] = ppl(r.model, tok)
    for sel in ("bi", "ppcl", "last"):
        r = depth(load("zoo:llama-tiny"), remove=1, select=sel, nsamples=16, seed=0, protect=1)
        res[f"depth1-{sel}"] = ppl(r.model, tok)
    for crit, adaptive in (("taylor", True), ("flap", False), ("wanda", True), ("magnitude", False)):
        r = width(load("zoo:llama-tiny"), params=0.75, criterion=crit, adaptive=adaptive, nsamples=8, seed=0)
        res[f"width75-{crit}{'-adaptive' if adaptive else ''}"] = ppl(r.model, tok)
    return res


if __name__ == "__main__":
    out = compute()
    print(json.dumps(out, indent=1))
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(out, f, indent=1)
