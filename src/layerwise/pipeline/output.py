"""Output directories that appear only when complete.

Work happens in a hidden sibling `.NAME.partial`; blocks, plan and manifest are written there; the
result is reloaded and checked; only then is it renamed to NAME. A user error removes the partial
directory; an interruption keeps it so that `--resume` can continue at the last finished block.
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

from ..console import info
from ..errors import ConfigError, LayerwiseError
from ..io import write_json, write_report
from ..io.artifacts import Artifact, check_not_overlapping, input_paths, io_reason
from ..io.structured import is_width_pruned, write_structure
from ..models.files import check_model_dir
from ..plan import Plan


@contextmanager
def guarded(output: "OutputDir | None"):
    """Hold the output's lock for the run; errors, faults and signals end as the artifact layer says."""
    if output is None:
        yield
        return
    with output.art.run():
        yield


def guard_output(out, model, tokenizer=None, calib=None, work_dir=None, overwrite: bool = False,
                 overwrite_source: bool = False, plan=None) -> Artifact | None:
    """Check a run's output (and training work directory) against its inputs before any work."""
    from .source import model_dir

    mdir = model_dir(model)
    inputs = input_paths(mdir, tokenizer, plan, calib)
    if work_dir is not None:
        check_not_overlapping(work_dir, inputs, option="--work-dir")
        if not Path(work_dir).expanduser().parent.is_dir():
            raise ConfigError(f"parent directory of --work-dir {work_dir} does not exist")
    if out is None:
        return None
    art = Artifact(out, inputs=inputs, overwrite=overwrite, overwrite_source=overwrite_source, model_path=mdir)
    if work_dir is None:
        check_not_overlapping(Path(str(art.out) + ".work"), inputs, option="the work directory")
    return art


def apply_resumed_rows(plan: Plan, res) -> None:
    """After a resumed run, copy what the finished blocks did (from the checkpoint) into the plan."""
    if not res.resumed_from:
        return
    info(f"resumed at block {res.resumed_from}")
    done = {d["name"]: d for d in res.rows}
    for r in plan.rows:
        for k, v in done.get(r.name, {}).items():
            if k != "shape":
                setattr(r, k, v)


def perplexity_of(src, model, windows: int) -> float:
    """Validation perplexity (first `windows` windows of stdlib); `model=None` = the source model."""
    from ..data.tokens import eval_windows
    from ..eval import perplexity

    if model is None:
        if src.loaded is not None:
            model = src.loaded.model
        else:
            from ..io.load import load_model

            model = load_model(src.spec).model
    w = eval_windows("stdlib", src.tokenizer, 256, "validation", windows)
    return perplexity(model, w, batch_size=16).perplexity


def evaluate_saved(src, directory: Path, metrics: dict, manifest: dict, windows: int) -> None:
    """Perplexity of a streamed result, read back from its (partial) output directory, into the
    manifest before it is written: the committed directory is never rewritten."""
    from ..io.load import load_model

    metrics["perplexity"] = perplexity_of(src, load_model(str(directory)).model, windows)
    manifest["metrics"] = metrics


class OutputDir:
    """A model output of a block-by-block run: an `Artifact` that can be resumed."""

    def __init__(self, out: str | Path, overwrite: bool = False, resume: bool = False, inputs=(),
                 overwrite_source: bool = False, model_path=None):
        self.art = Artifact(out, inputs=inputs, overwrite=overwrite, overwrite_source=overwrite_source,
                            resumable=True, resume=resume, model_path=model_path)
        self.out = self.art.out
        self.partial = self.art.partial
        self.resume = resume
        if resume and not self.partial.exists():
            info(f"nothing to resume in {self.partial}; starting from block 0")

    def begin(self) -> Path:
        return self.art.begin()

    def partial_has_state(self) -> bool:
        return any(self.partial.glob("engine_state*.pt")) and (self.partial / "plan_in_progress.json").exists()

    def abort(self) -> None:
        self.art.abort()

    def finish(self, store, src, plan: Plan, manifest: dict, res, sample_ids: torch.Tensor, title: str,
               config_updates: dict | None = None, verify=True, after_config=None, before_manifest=None) -> Path:
        try:
            store.write_rest()
            cfg = store.model.config
            if hasattr(store.model, "save_config"):      # a diffusers model: its own config file format
                if config_updates:
                    store.model.register_to_config(**config_updates)
                store.model.save_config(self.partial)
            else:
                if not getattr(cfg, "architectures", None):
                    cfg.architectures = [type(store.model).__name__]
                for k, v in (config_updates or {}).items():
                    setattr(cfg, k, v)
                if store.fully_in_memory and is_width_pruned(store.model):
                    write_structure(store.model, self.partial)
                cfg.save_pretrained(self.partial)
            if after_config is not None:
                after_config()
            gen = getattr(store.model, "generation_config", None)
            if gen is not None and src.path is not None and (src.path / "generation_config.json").exists():
                shutil.copy2(src.path / "generation_config.json", self.partial / "generation_config.json")
            if src.tokenizer is not None:
                src.tokenizer.save_pretrained(self.partial)
            plan.save(self.partial / "plan.json")
            if callable(verify):
                manifest.setdefault("checks", {})["reload"] = verify()
            elif verify:
                manifest.setdefault("checks", {})["reload"] = self._verify(store, res, sample_ids)
            if before_manifest is not None:   # measurements of the written output (size, perplexity)
                before_manifest(self.partial)
            write_json(self.partial / "manifest.json", manifest)
            write_report(self.partial, plan, manifest, title)
            for state in self.partial.glob("engine_state*.pt"):   # one per tower of a multi-tower model
                state.unlink()
            (self.partial / "plan_in_progress.json").unlink(missing_ok=True)
            self.art.commit(check=lambda p: check_model_dir(p))
        except OSError as e:
            raise LayerwiseError(f"cannot write {self.out}: {io_reason(e)}; nothing was written") from e
        return self.out

    @torch.no_grad()
    def _verify(self, store, res, sample_ids: torch.Tensor) -> str:
        """Reload what was written and compare with what was computed.

        In memory: stock `from_pretrained` of the output, logits compared bit for bit. Streamed: the
        output is streamed back block by block (so the check needs no more memory than the run) and
        its last-block activations on the engine's probe input are compared bit for bit with the
        engine's.
        """
        from ..io.verify import check_reload, check_streamed_reload

        if store.fully_in_memory:
            return check_reload(store.model, self.partial, store.adapter.model_inputs(sample_ids))
        if res.probe_hidden is None:
            return "not checked (resumed from a partial run without a probe)"
        dtype = next(p for p in store.model.parameters() if not p.is_meta).dtype
        return check_streamed_reload(self.partial, res.probe_ids, res.probe_hidden, dtype)
