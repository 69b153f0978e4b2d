"""Per-block token-sparsity schedules: uniform, or searched by a genetic algorithm (FTP section 5.2).

A genome is one sparsity per block with block 0 pinned at 0 (it computes every token), each in
[0, s_max], projected so the mean over all blocks is the target exactly. Fitness is the negative KL
divergence of the routed model's next-token distribution from the dense model's on a fixed
calibration batch. Tournament selection, blend crossover, Gaussian mutation, elitism.

With a `state_file` the population, the random generator, the fitness cache and the history are
saved after every generation, and a rerun with the same settings continues where it stopped with the
same result as an uninterrupted search.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..console import progress_bar
from ..errors import ConfigError
from .routing import TokenRouting


def project(s: np.ndarray, target: float, s_max: float) -> np.ndarray:
    """Block 0 at 0; the rest in [0, s_max] with mean(s) == target over all blocks."""
    s = np.asarray(s, dtype=np.float64).copy()
    L = len(s)
    if not 0 <= target <= s_max * (L - 1) / L:
        raise ConfigError(f"mean token sparsity {target:g} is out of reach with block 0 dense and at most "
                          f"{s_max:g} per block ({L} blocks)")
    s[0] = 0.0
    for _ in range(100):
        s[1:] = np.clip(s[1:] + (target * L - s.sum()) / (L - 1), 0.0, s_max)
        if abs(s.sum() - target * L) < 1e-12:
            break
    free = (s[1:] > 0) & (s[1:] < s_max)
    if abs(s.sum() - target * L) > 1e-9 and free.any():
        s[1:][free] += (target * L - s.sum()) / free.sum()
    return s


def uniform_schedule(num_blocks: int, target: float, s_max: float = 0.95) -> list[float]:
    return [float(x) for x in project(np.full(num_blocks, target), target, s_max)]


@torch.no_grad()
def kl_to_dense(model, selector, drop: list[float], ids: torch.Tensor, dense_logp: torch.Tensor,
                positions: torch.Tensor | None = None) -> float:
    """Mean KL(dense ‖ routed) of the next-token distributions (at `positions`, default all)."""
    with TokenRouting(model, selector, drop):
        logp = F.log_softmax(model(input_ids=ids, use_cache=False).logits.float(), dim=-1)
    kl = (dense_logp.exp() * (dense_logp - logp)).sum(-1)
    return float((kl if positions is None else kl[:, positions]).mean())


def ga_schedule(fitness: Callable[[list[float]], float], num_blocks: int, target: float, *, s_max: float = 0.9,
                population: int = 8, generations: int = 10, seed: int = 0, init: list[float] | None = None,
                sigma: float = 0.05, elite: int = 2, description: str = "schedule search",
                state_file: str | os.PathLike | None = None) -> tuple[list[float], list]:
    """The best schedule found and the history (best fitness per generation)."""
    settings = {"num_blocks": num_blocks, "target": target, "s_max": s_max, "population": population,
                "generations": generations, "seed": seed, "init": init, "sigma": sigma, "elite": elite}
    rng = np.random.default_rng(seed)
    center = np.asarray(init if init is not None else np.full(num_blocks, target), dtype=np.float64)
    pop = [project(center, target, s_max)]
    while len(pop) < population:
        pop.append(project(center + rng.normal(0, 0.15 if init is None else sigma, num_blocks), target, s_max))
    cache: dict[tuple, float] = {}
    history: list = []
    start = 0
    if state_file is not None and Path(state_file).exists():
        start, pop, history = _resume(Path(state_file), settings, rng, cache)

    def fit(s):
        key = tuple(np.round(s, 6))
        if key not in cache:
            cache[key] = float(fitness([float(x) for x in s]))
        return cache[key]

    with progress_bar() as prog:
        task = prog.add_task(description, total=generations, completed=start, info="")
        for gen in range(start, generations):
            scores = np.array([fit(s) for s in pop])
            order = np.argsort(-scores)
            history.append({"generation": gen, "best": float(scores[order[0]]), "mean": float(scores.mean()),
                            "best_schedule": [float(x) for x in pop[order[0]]]})
            prog.update(task, advance=1, info=f"best −KL {scores[order[0]]:.4f}")
            nxt = [pop[i] for i in order[:elite]]
            while len(nxt) < population:
                a, b = (pop[max(rng.choice(len(pop), 2, replace=False), key=lambda i: scores[i])] for _ in range(2))
                w = rng.uniform(-0.25, 1.25, num_blocks)
                child = w * a + (1 - w) * b + rng.normal(0, sigma, num_blocks)
                nxt.append(project(child, target, s_max))
            pop = nxt
            if state_file is not None:
                _save(Path(state_file), settings, gen + 1, pop, history, rng, cache)
    scores = np.array([fit(s) for s in pop])
    best = pop[int(np.argmax(scores))]
    return [float(x) for x in best], history


def _save(path: Path, settings, done, pop, history, rng, cache) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"settings": settings, "done": done, "population": [p.tolist() for p in pop], "history": history,
             "rng": rng.bit_generator.state, "cache": [[list(k), v] for k, v in cache.items()]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def _resume(path: Path, settings, rng, cache) -> tuple[int, list, list]:
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not a schedule-search state ({e}); remove it to restart") from e
    if state.get("settings") != json.loads(json.dumps(settings)):
        raise ConfigError(f"{path} was written by a schedule search with other settings; remove it to restart")
    rng.bit_generator.state = state["rng"]
    cache.update({tuple(k): v for k, v in state["cache"]})
    return state["done"], [np.asarray(p, dtype=np.float64) for p in state["population"]], state["history"]
