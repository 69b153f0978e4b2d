"""Width pruning of a vision transformer with and without healing: `zoo:vit-digits` (6 blocks, test accuracy
0.9542), attention heads and MLP channels removed by the Wanda unit criterion to 70% / 50% of the block
parameters (uniform and adaptive per-block shares), then 0 / 1 / 3 epochs of distillation from the dense
ViT on its training canvases (AdamW, lr 1e-3, batch 64; 0.9·T²·KL + 0.1·CE). Test accuracy over
`--seeds` seeds (calibration draw and training shuffle; mean ± sd), and images/s of the pruned model vs
the dense one, side by side (batch 64, medians of 7 interleaved runs).

    python benchmarks/vit_width.py [--seeds 3]
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

from common import ROOT, command_line, machine_note, md_table, update_section  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "vit_width.json"
KEEPS = (0.7, 0.5)
EPOCHS = (0, 1, 3)


def images_per_s(models: dict, x: torch.Tensor, repeats: int) -> dict:
    times = {k: [] for k in models}
    with torch.no_grad():
        for m in models.values():
            m(pixel_values=x)
        for _ in range(repeats):
            for k, m in models.items():
                t0 = time.perf_counter()
                m(pixel_values=x)
                times[k].append(time.perf_counter() - t0)
    return {k: x.shape[0] / statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    import layerwise
    from layerwise.data.images import canvases_for
    from layerwise.eval.images import classifier_score
    from layerwise.pipeline.width import block_params, width

    torch.set_num_threads(2)
    base = layerwise.load("zoo:vit-digits")
    dense = base.model.eval()
    test = canvases_for("test", 16, base.card["data"])
    res = {"dense": classifier_score(dense, test).accuracy, "runs": [], "speed": {}}
    for seed in range(args.seeds):
        for keep in KEEPS:
            for adaptive in (False, True):
                for epochs in EPOCHS:
                    t0 = time.perf_counter()
                    r = width("zoo:vit-digits", params=keep, adaptive=adaptive, criterion="wanda", nsamples=32,
                              seed=seed, epochs=epochs, lr=1e-3, global_batch=64)
                    acc = classifier_score(r.model, test).accuracy
                    res["runs"].append({"seed": seed, "keep": keep, "adaptive": adaptive, "epochs": epochs,
                                        "accuracy": acc, "kept": r.params_after / r.params_before,
                                        "seconds": time.perf_counter() - t0})
                    print(f"seed {seed} keep {keep} {'adaptive' if adaptive else 'uniform '} {epochs} epochs: "
                          f"accuracy {acc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
                    if seed == 0 and epochs == 0:
                        res["speed"][f"{keep}-{adaptive}"] = r.model
    x = test.pixels[:64]
    models = {"dense": dense, **res["speed"]}
    ips = images_per_s(models, x, args.repeats)
    res["speed"] = {k: {"images_per_s": v, "vs_dense": v / ips["dense"],
                        "block_params": block_params(models[k]) / block_params(dense)} for k, v in ips.items()}
    res.update(machine=machine_note(), command=command_line(), args=vars(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=1))
    body = render(res)
    print(body)
    if not args.no_write:
        update_section("vit_width", body, "Width pruning of a ViT, with and without healing", commands=[res["command"]])


def render(res: dict) -> str:
    def ms(v):
        return f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"

    rows = []
    for keep in KEEPS:
        for adaptive in (False, True):
            cells = [f"{keep:.0%}", "adaptive" if adaptive else "uniform"]
            for epochs in EPOCHS:
                cells.append(ms([r["accuracy"] for r in res["runs"] if r["keep"] == keep and r["adaptive"] == adaptive
                                 and r["epochs"] == epochs]))
            rows.append(cells)
    speed = [[k if k == "dense" else f"{float(k.split('-')[0]):.0%} {'adaptive' if k.endswith('True') else 'uniform'}",
              f"{v['block_params']:.3f}", f"{v['images_per_s']:.0f}", f"{v['vs_dense']:.2f}×"]
             for k, v in res["speed"].items()]
    n = res["args"]["seeds"]
    return "\n".join([
        f"`zoo:vit-digits` (dense test accuracy {res['dense']:.4f} on 1988 test canvases); Wanda unit criterion on "
        f"32 calibration canvases; healing = distillation from the dense ViT on its training canvases (AdamW, lr "
        f"1e-3, batch 64); test accuracy, mean ± sd over {n} seeds:", "",
        md_table(["block parameters kept", "shares", "no healing", "1 epoch", "3 epochs"], rows), "",
        "Speed, batch 64, medians of interleaved runs (the one-shot models of seed 0):", "",
        md_table(["model", "block parameters", "images/s", "vs dense"], speed)])


if __name__ == "__main__":
    main()
