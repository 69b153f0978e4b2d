"""`layerwise analyze`: resolve the model, sample calibration data, score, report."""
from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

from ..engine import InMemoryStore, LazyStore
from ..models.adapters.towers import whole_model_dir
from ..errors import ConfigError
from ..utils.checks import count
from ..scores.analyze import Analysis, ESDOptions, analyze_store
from ..scores.base import SCORES, parse_scores
from ..scores.esd import XMIN_RULES
from ..utils.hf import quiet
from .output import guard_output
from .source import calibration_inputs, model_dir, resolve


def analyze(model, scores="lim,zd,bi,alpha,farms", calib: str = "stdlib", nsamples: int = 32,
            seqlen: int = 256, seed: int = 0, out: str | Path | None = None, overwrite: bool = False,
            farms_rows: int | None = None, farms_windows: int = 8, xmin: str = "peak", tokenizer=None,
            batch_size: int = 8, zo_samples: int = 32, reference_exact: bool = False) -> Analysis:
    quiet()
    t0 = time.perf_counter()
    names = parse_scores(scores)
    if xmin not in XMIN_RULES:
        raise ConfigError(f"--xmin must be one of {', '.join(XMIN_RULES)} (got {xmin!r})")
    if nsamples < 1 or seqlen < 2:
        raise ConfigError("--nsamples must be >= 1 and --seqlen >= 2")
    count("--farms-windows", farms_windows)
    if farms_rows is not None:
        count("--farms-rows", farms_rows)
    count("--batch-size", batch_size)
    count("zo_samples", zo_samples)
    art = guard_output(out, model, tokenizer, calib, overwrite=overwrite)
    with art.run() if art is not None else nullcontext():
        need_memory = any(SCORES[n].source == "loss" for n in names)
        src = resolve(model, tokenizer, load=need_memory or whole_model_dir(model_dir(model)))
        store = InMemoryStore(src.loaded.model, all_towers=True) if src.loaded is not None else LazyStore(src.path, None)
        samples = calibration_inputs(calib, src.tokenizer, nsamples, seqlen, seed, src.spec, store.adapter)
        an = analyze_store(store, samples, names, batch_size=batch_size,
                           esd_opts=ESDOptions(xmin=xmin, farms_rows=farms_rows, farms_windows=farms_windows,
                                                      reference_exact=reference_exact),
                           zo_samples=zo_samples, seed=seed, model_name=src.spec)
        an.timings["total_s"] = time.perf_counter() - t0
        if out is not None:
            from ..scores.report import write_analysis_report
            from ..io import write_json
            from ..io.manifest import build_manifest

            tmp = art.begin()
            write_json(tmp / "analysis.json", an.to_dict())
            an.to_plan().save(tmp / "plan.json")
            write_analysis_report(tmp, an)
            write_json(tmp / "manifest.json", build_manifest(
                "analyze", {"model": src.spec, "scores": names, "calib": calib, "nsamples": nsamples,
                            "seqlen": seqlen, "xmin": xmin, "farms_rows": an.options["esd"]["farms_rows"],
                            "farms_windows": farms_windows}, seed, an.timings))
            art.commit()
    return an
