"""`layerwise analyze`: every requested score, per block and per linear, in one engine pass.

Data scores (LIM, BI, OWL outliers) and weight scores (ZD, α, FARMS α) are computed block by block
with dense propagation, so analysis streams like compression does; the zeroth-order score needs the
whole model in memory (it perturbs one tensor at a time and runs the full forward).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..engine import run_towers
from ..plan import BlockRow, Plan, PlanRow
from ..engine.sequential import BlockWork
from .base import SCORES, get_score
from .esd import esd, farms_esd, fit_power_law
from .outliers import outlier_ratio
from .similarity import mean_token_cosine
from .weights import zd


@dataclass
class ESDOptions:
    xmin: str = "peak"
    bins: int = 100
    farms_rows: int | None = None     # window rows m; default: the smallest matrix dimension (≤ 2000)
    farms_ratio: float = 1.0          # aspect ratio Q: window columns = m·Q
    farms_windows: int = 8            # windows per dimension K
    # The AlphaPruning/FARMS repositories' exact fit: their tail-start comparison against
    # log10(0.95·peak) and no filter of (near-)zero eigenvalues. Off: the corrected rule.
    reference_exact: bool = False


@dataclass
class Analysis:
    model: str
    num_blocks: int
    linears: list[dict]                                   # name, block, shape, params
    block_scores: dict[str, list[float]] = field(default_factory=dict)
    linear_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    spectra: dict[str, dict[str, dict]] = field(default_factory=dict)   # kind -> linear -> eigs + fit
    options: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def block_table(self) -> list[dict]:
        rows = []
        for b in range(self.num_blocks):
            row = {"block": b, "params": sum(x["params"] for x in self.linears if x["block"] == b)}
            for name, vals in self.block_scores.items():
                row[name] = vals[b]
            rows.append(row)
        return rows

    def to_plan(self) -> Plan:
        """The analysis as a Plan: every linear and every block with its scores, no budgets yet."""
        rows = [PlanRow(x["name"], x["block"], tuple(x["shape"]), method="",
                        scores={k: v[x["name"]] for k, v in self.linear_scores.items() if x["name"] in v})
                for x in self.linears]
        blocks = [BlockRow(b, "keep", None, "", {k: v[b] for k, v in self.block_scores.items()})
                  for b in range(self.num_blocks)]
        directions = {k: "higher = more important" if SCORES[k].higher_is_important else "lower = more important"
                      for k in self.block_scores}
        return Plan(rows=rows, blocks=blocks, meta={"kind": "analysis", "model": self.model,
                                                    "directions": directions, "options": self.options})

    def to_dict(self, with_spectra: bool = False) -> dict:
        d = {"model": self.model, "num_blocks": self.num_blocks, "linears": self.linears,
             "block_scores": self.block_scores, "linear_scores": self.linear_scores,
             "directions": {k: ("higher = more important" if SCORES[k].higher_is_important
                                else "lower = more important") for k in self.block_scores},
             "options": self.options, "timings": self.timings,
             "fits": {kind: {n: {k: v for k, v in f.items() if k != "eigs"} for n, f in fits.items()}
                      for kind, fits in self.spectra.items()}}
        return d


def _aggregate(name: str, linears: list[dict], values: dict[str, float], num_blocks: int) -> list[float]:
    agg = get_score(name).block_agg
    out = []
    for b in range(num_blocks):
        v = [values[x["name"]] for x in linears if x["block"] == b and x["name"] in values]
        v = [x for x in v if np.isfinite(x)]
        out.append(float(np.sum(v) if agg == "sum" else np.mean(v)) if v else float("nan"))
    return out


def analyze_store(store, samples: torch.Tensor, scores: list[str], *, select=lambda n: True,
                  batch_size: int = 8, esd_opts: ESDOptions | None = None, owl_m: float = 5.0,
                  zo_samples: int = 32, zo_eps: float = 1e-3, seed: int = 0, keep_eigs: bool = True,
                  model_name: str = "") -> Analysis:
    esd_opts = esd_opts or ESDOptions()
    adapter = store.adapter
    linears = [{"name": r.name, "block": r.block, "shape": list(r.shape), "params": r.shape[0] * r.shape[1]}
               for r in adapter.all_linears() if select(r.name)]
    an = Analysis(model_name, adapter.num_blocks, linears, options={
        "scores": scores, "esd": esd_opts.__dict__, "owl_m": owl_m, "zo_samples": zo_samples, "zo_eps": zo_eps,
        "seed": seed, "calibration": samples.describe() if hasattr(samples, "describe") else list(samples.shape)})
    m_rows = esd_opts.farms_rows or min(2000, min(min(x["shape"]) for x in linears))
    an.options["esd"]["farms_rows"] = m_rows
    need_pass = any(SCORES[s].source in ("data", "weights") for s in scores)
    lin_vals: dict[str, dict[str, float]] = {s: {} for s in scores if SCORES[s].level == "linear"}
    blk_vals: dict[str, list[float]] = {s: [float("nan")] * adapter.num_blocks for s in scores
                                        if SCORES[s].level == "block"}
    spectra: dict[str, dict] = {k: {} for k in ("alpha", "farms") if k in scores}
    t_weights = 0.0

    def action(work: BlockWork) -> list:
        nonlocal t_weights
        t0 = time.perf_counter()
        ws = [r.weight.detach() for r in work.linears]
        if "zd" in blk_vals:
            blk_vals["zd"][work.index] = zd(ws)
        if "owl" in blk_vals:
            blk_vals["owl"][work.index] = outlier_ratio(ws, [work.stats[r.name].mean_sq for r in work.linears],
                                                        owl_m)
        for kind in spectra:
            for r in work.linears:
                eigs = esd(r.weight) if kind == "alpha" else farms_esd(
                    r.weight, m_rows, esd_opts.farms_ratio, esd_opts.farms_windows)
                fit = fit_power_law(eigs, xmin=esd_opts.xmin, bins=esd_opts.bins,
                                    filter_zeros=not esd_opts.reference_exact,
                                    reference_peak=esd_opts.reference_exact)
                lin_vals[kind][r.name] = fit.alpha
                rec = fit.to_dict()
                if keep_eigs:
                    rec["eigs"] = eigs
                spectra[kind][r.name] = rec
        t_weights += time.perf_counter() - t0
        return []

    def observe(i: int, inputs: list, outputs: list) -> None:
        if "lim" in blk_vals or "bi" in blk_vals:
            c = mean_token_cosine(inputs, outputs)
            if "lim" in blk_vals:
                blk_vals["lim"][i] = -c
            if "bi" in blk_vals:
                blk_vals["bi"][i] = 1.0 - c

    if need_pass:
        res = run_towers(store, samples, action, select=select, gram=False, propagate="dense",
                             batch_size=batch_size, description="analyze", observe=observe)
        an.timings.update({"engine_s": res.timings.total_s, "weight_scores_s": t_weights})
    if "zeroth_order" in scores:
        from .zeroth_order import zeroth_order_scores

        if not store.fully_in_memory:
            raise RuntimeError("zeroth_order needs the model in memory")
        t0 = time.perf_counter()
        refs = [r for r in adapter.all_linears() if select(r.name)]
        lin_vals["zeroth_order"] = zeroth_order_scores(store.model, refs, samples, n_samples=zo_samples,
                                                       batch_size=batch_size, eps=zo_eps, seed=seed)
        an.timings["zeroth_order_s"] = time.perf_counter() - t0
    an.linear_scores = lin_vals
    for s in scores:
        if SCORES[s].level == "linear":
            an.block_scores[s] = _aggregate(s, linears, lin_vals[s], adapter.num_blocks)
        else:
            an.block_scores[s] = blk_vals[s]
    an.block_scores = {s: an.block_scores[s] for s in scores}
    an.spectra = spectra
    return an
