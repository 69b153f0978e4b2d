"""`layerwise sample`: draw samples of a class-conditional flow generator into an image grid (and a
tensor file), written atomically; optionally judged by a classifier."""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..errors import ConfigError
from ..rl.policy import num_conditions, sample_shape
from ..rl.sampler import Sampler
from ..rl.trainer import samples
from ..utils.hf import quiet
from .source import resolve


def parse_prompt(prompt: str, classes: int) -> list[int]:
    text = str(prompt).strip().lower()
    if text == "all":
        return list(range(classes))
    try:
        out = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"--prompt takes class numbers like 3 or 0,1,2 or 'all' (got {prompt!r})") from None
    bad = [c for c in out if not 0 <= c < classes]
    if not out or bad:
        raise ConfigError(f"--prompt names no known class: {prompt!r} (this model has classes 0 to {classes - 1})")
    return out


def sample(model, prompt: str, *, n: int = 16, steps: int = 20, eta: float = 0.3, shift: float = 1.0, seed: int = 0,
           out: str | os.PathLike, overwrite: bool = False, judge: str | None = None, depth=None) -> dict:
    """`n` samples per class of `prompt`; `depth` picks a member of a depth family (`layerwise depth --family`)."""
    quiet()
    if n < 1 or steps < 1 or eta < 0:
        raise ConfigError("--n and --steps must be >= 1 and --eta >= 0")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out must be a .png file (got {out})")
    if not out.parent.is_dir():
        raise ConfigError(f"the directory of --out {out} does not exist")
    tensor = out.with_suffix(".pt")
    if (out.exists() or tensor.exists()) and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
    src = resolve(model)
    net = src.loaded.model.eval()
    if depth is not None:
        from ..prune.family import plug

        if src.loaded.path is None:
            raise ConfigError("--depth needs a depth-family directory (layerwise depth --family)")
        net = plug(net, src.loaded.path, depth)
    from .tokens_diffusion import is_pairs_model

    pairs = is_pairs_model(net)
    if pairs:       # a text-conditioned UNet: prompts are "LEFT RIGHT" digit pairs (data.pairs)
        from ..data.pairs import parse_pair_prompt

        cond = parse_pair_prompt(prompt)
        label = prompt
    else:
        classes = parse_prompt(prompt, num_conditions(net))
        cond = torch.tensor(classes)
        label = "classes " + ",".join(map(str, classes))
    if math.prod(sample_shape(net)) <= 2:
        raise ConfigError("`layerwise sample` draws image grids; this generator makes 2-D points")
    with torch.no_grad():
        x = samples(net, Sampler(steps, shift, eta), cond, n, seed)
    res = {"samples": int(x.shape[0]), "out": out, "tensor": tensor}
    if judge:
        from ..eval.generators import pair_consistency, prompt_accuracy
        from ..io.load import load_model

        jm = load_model(judge).model.eval()
        res["prompt_accuracy"] = pair_consistency(jm, x, cond.repeat_interleave(n, dim=0))["consistency"] if pairs \
            else prompt_accuracy(jm, x, cond.repeat_interleave(n))
    from ..eval.generators import save_grid

    tmp_png, tmp_pt = out.with_name(f".{out.name}.partial.png"), out.with_name(f".{tensor.name}.partial")
    try:
        save_grid(x.reshape(x.shape[0], 1, *x.shape[-2:]), tmp_png, n, f"{src.spec}: {label}")
        torch.save({"samples": x, "prompts" if pairs else "classes": cond.repeat_interleave(n, dim=0), "steps": steps, "eta": eta, "seed": seed},
                   tmp_pt)
        os.replace(tmp_png, out)
        os.replace(tmp_pt, tensor)
    finally:
        for f in (tmp_png, tmp_pt):
            f.unlink(missing_ok=True)
    return res


@torch.no_grad()
def write_sample_grid(model, path: Path, title: str, per: int = 6, seed: int = 777, steps: int = 20) -> None:
    """A report's sample grid: one row per class (0-9) or per evaluation prompt of a two-digit model."""
    from ..eval.generators import save_grid
    from .tokens_diffusion import is_pairs_model

    if is_pairs_model(model):
        from ..data.pairs import eval_prompts

        cond = eval_prompts()[::4]
    else:
        cond = torch.arange(min(10, num_conditions(model)))
    x = samples(model, Sampler(steps), cond, per, seed)
    save_grid(x.reshape(x.shape[0], 1, *x.shape[-2:]), path, per, title)
