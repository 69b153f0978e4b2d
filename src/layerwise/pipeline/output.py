"""Output directories that appear only when complete.

Work happens in a hidden sibling `.NAME.partial`; blocks, plan and manifest are written there; the
result is reloaded and checked; only then is it renamed to NAME. A user error removes the partial
directory; an interruption keeps it so that `--resume` can continue at the last finished block.
"""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

from ..console import info
from ..errors import ConfigError, LayerwiseError
from ..io import write_json, write_report
from ..plan import Plan


@contextmanager
def guarded(output: "OutputDir | None"):
    """User errors remove the partial output; interruptions keep it for --resume."""
    try:
        yield
    except LayerwiseError:
        if output is not None:
            output.abort()
        raise
    except KeyboardInterrupt:
        if output is not None:
            output.interrupted()
        raise


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
            from ..models.loader import load_model

            model = load_model(src.spec).model
    w = eval_windows("stdlib", src.tokenizer, 256, "validation", windows)
    return perplexity(model, w, batch_size=16).perplexity


def evaluate_saved(src, out_path: Path, metrics: dict, manifest: dict, windows: int) -> None:
    """Perplexity of a streamed result, read back from its output directory, into the manifest."""
    from ..models.loader import load_model

    metrics["perplexity"] = perplexity_of(src, load_model(str(out_path)).model, windows)
    manifest["metrics"] = metrics
    write_json(out_path / "manifest.json", manifest)


class OutputDir:
    def __init__(self, out: str | Path, overwrite: bool = False, resume: bool = False):
        self.out = Path(out).expanduser()
        self.overwrite = overwrite
        self.resume = resume
        parent = self.out.parent if str(self.out.parent) else Path(".")
        if not parent.exists():
            raise ConfigError(f"parent directory of --out {self.out} does not exist")
        if self.out.exists() and not (self.out.is_dir() and not any(self.out.iterdir())) and not overwrite:
            raise ConfigError(f"output directory {self.out} already exists; pass --overwrite to replace it")
        self.partial = parent / f".{self.out.name}.partial"
        if resume and not self.partial.exists():
            info(f"nothing to resume in {self.partial}; starting from block 0")

    def check_not_source(self, src: Path | None) -> None:
        if src is not None and self.out.exists() and self.out.resolve() == Path(src).resolve():
            raise ConfigError(f"--out {self.out} is the source model; choose another directory")

    def begin(self) -> Path:
        if self.partial.exists() and not self.resume:
            shutil.rmtree(self.partial)
        try:
            self.partial.mkdir(exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create {self.partial}: {e.strerror}") from e
        return self.partial

    def partial_has_state(self) -> bool:
        return (self.partial / "engine_state.pt").exists() and (self.partial / "plan_in_progress.json").exists()

    def reset_state(self) -> None:
        for p in self.partial.iterdir():
            if p.is_file():
                p.unlink()

    def abort(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)

    def interrupted(self) -> None:
        if self.partial.exists():
            info(f"interrupted: finished blocks are kept in {self.partial}; rerun the same command with "
                 "--resume to continue")

    def finish(self, store, src, plan: Plan, manifest: dict, res, sample_ids: torch.Tensor, title: str,
               config_updates: dict | None = None, verify=True, after_config=None) -> Path:
        try:
            store.write_rest()
            cfg = store.model.config
            if not getattr(cfg, "architectures", None):
                cfg.architectures = [type(store.model).__name__]
            for k, v in (config_updates or {}).items():
                setattr(cfg, k, v)
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
            write_json(self.partial / "manifest.json", manifest)
            write_report(self.partial, plan, manifest, title)
            (self.partial / "engine_state.pt").unlink(missing_ok=True)
            (self.partial / "plan_in_progress.json").unlink(missing_ok=True)
            if self.out.exists():
                old = self.out.with_name(f".{self.out.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(self.out, old)
                os.replace(self.partial, self.out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(self.partial, self.out)
        except OSError as e:
            self.abort()
            if e.errno == errno.ENOSPC:
                raise LayerwiseError(f"disk full while writing {self.out}; nothing was written") from e
            raise LayerwiseError(f"cannot write {self.out}: {e.strerror or e}") from e
        return self.out

    @torch.no_grad()
    def _verify(self, store, res, sample_ids: torch.Tensor) -> str:
        """Reload what was written and compare with what was computed.

        In memory: stock `from_pretrained` of the output, logits compared bit for bit. Streamed: the
        output is streamed back block by block (so the check needs no more memory than the run) and
        its last-block activations on the first calibration batch are compared bit for bit with the
        engine's.
        """
        if store.fully_in_memory:
            from transformers import AutoModel, AutoModelForCausalLM

            from ..models.loader import _causal_config

            cls = AutoModelForCausalLM if _causal_config(store.model.config) else AutoModel
            reloaded = cls.from_pretrained(self.partial, dtype=next(store.model.parameters()).dtype).eval()
            a = store.model(input_ids=sample_ids, use_cache=False)
            b = reloaded(input_ids=sample_ids, use_cache=False)
            la = a.logits if hasattr(a, "logits") else a.last_hidden_state
            lb = b.logits if hasattr(b, "logits") else b.last_hidden_state
            if not torch.equal(la, lb):
                raise LayerwiseError(f"the saved model does not reproduce the in-memory logits "
                                     f"(max diff {float((la - lb).abs().max()):.3g}); nothing was written")
            return "stock from_pretrained reload: logits identical to the in-memory model"
        if res.final_hidden is None or res.propagate != "pruned":
            return "not checked (dense propagation)"
        from ..engine.capture import capture_block_inputs
        from ..engine.store import LazyStore

        back = LazyStore(self.partial, None, dtype=next(p for p in store.model.parameters() if not p.is_meta).dtype)
        n = res.final_hidden[0].shape[0]
        (batch,) = capture_block_inputs(back.model, back.adapter, res.first_ids[:n], batch_size=n)
        h = batch.hidden
        for i in range(back.adapter.num_blocks):
            block = back.load_block(i)
            h = back.adapter.call_block(block, h, batch.args, batch.kwargs)
            back._free(i)
        if not torch.equal(h, res.final_hidden[0]):
            raise LayerwiseError(f"the saved model does not reproduce the engine's activations (max diff "
                                 f"{float((h - res.final_hidden[0]).abs().max()):.3g}); nothing was written")
        return "streamed reload: last-block activations identical to the engine's"
