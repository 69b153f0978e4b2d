"""The Plan: one typed table for every granularity.

- `rows`: one row per targeted linear (sparsity, N:M pattern, bits, group size);
- `blocks`: one row per block (keep/remove, the interval it belongs to, the selector's scores);
- `units`: one row per block and unit kind of a width stage (KV groups, MLP channels, ...): which
  units were removed;
- `tokens`: one row per token site (keep ratio and selector), for the token-pruning methods.

Analyze writes scores into it, an allocator or selector fills the budgets, an action reads it and
writes back what it did. It is printed as a table, saved as JSON next to the weights, can be edited
by hand, and replayed with `--plan FILE` by prune, quantize, depth and width. Version 1 files (linear
rows only) still load.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import ConfigError

PLAN_VERSION = 2
BLOCK_ACTIONS = ("keep", "remove")
UNIT_KINDS = ("kv_group", "mlp_channel", "head", "conv_channel")


@dataclass
class PlanRow:
    name: str                         # full module name
    block: int
    shape: tuple[int, int]            # out × in
    sparsity: float = 0.0             # target fraction of zeros (unstructured)
    pattern: str = "unstructured"     # or "N:M"
    method: str = "wanda"
    scores: dict = field(default_factory=dict)
    bits: int | None = None           # weight bits (quantization plans)
    group_size: int | None = None
    # Filled in by the action:
    zeros_planned: int | None = None
    zeros: int | None = None
    # ‖(W − Ŵ)Xᵀ‖² / ‖WXᵀ‖² on calibration inputs (≤2048 tokens unless Hessian-based; ≤256 output rows)
    recon_error: float | None = None
    damping: float | None = None
    seconds: float | None = None

    @property
    def params(self) -> int:
        return int(self.shape[0]) * int(self.shape[1])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass
class BlockRow:
    block: int
    action: str = "keep"                  # keep | remove
    interval: list[int] | None = None     # [start, end, keep]: the interval one block stands in for
    method: str = ""                      # the depth selector that decided
    scores: dict = field(default_factory=dict)


@dataclass
class UnitRow:
    block: int
    unit: str                             # kv_group | mlp_channel | head | conv_channel
    removed: list[int] = field(default_factory=list)   # indices in the stage's input numbering
    total: int | None = None              # units of that kind the block had before the stage
    stage: int = 1
    method: str = ""                      # the width criterion
    where: str = ""                       # the module inside the block when it has several of one kind (conv1, conv2)


@dataclass
class TokenRow:
    site: int                             # block whose input tokens are selected
    keep_ratio: float = 1.0
    method: str = ""                      # the token selector
    config: dict = field(default_factory=dict)


_KINDS = {"blocks": BlockRow, "units": UnitRow, "tokens": TokenRow}


@dataclass
class Plan:
    rows: list[PlanRow] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    blocks: list[BlockRow] = field(default_factory=list)
    units: list[UnitRow] = field(default_factory=list)
    tokens: list[TokenRow] = field(default_factory=list)

    # --- access ---------------------------------------------------------------------------------
    def by_name(self) -> dict[str, PlanRow]:
        return {r.name: r for r in self.rows}

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    def mean_sparsity(self) -> float:
        """Parameter-weighted mean of the planned sparsity."""
        tp = self.total_params
        return sum(r.params * _row_sparsity(r) for r in self.rows) / tp if tp else 0.0

    def mean_bits(self) -> float | None:
        """Parameter-weighted mean bits of the rows (the nominal average)."""
        if any(r.bits is None for r in self.rows) or not self.rows:
            return None
        return sum(r.params * r.bits for r in self.rows) / self.total_params

    def measured_sparsity(self) -> float | None:
        if any(r.zeros is None for r in self.rows):
            return None
        return sum(r.zeros for r in self.rows) / self.total_params

    # --- persistence ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"version": PLAN_VERSION, "meta": self.meta, "rows": [r.to_dict() for r in self.rows]}
        for key in _KINDS:
            d[key] = [asdict(r) for r in getattr(self, key)]
        return d

    def removed_blocks(self) -> list[int]:
        return sorted(b.block for b in self.blocks if b.action == "remove")

    def intervals(self) -> list[dict]:
        """The intervals of the block rows ({start, end, keep}), in order."""
        seen = {}
        for b in self.blocks:
            if b.interval is not None:
                s, e, k = b.interval
                seen[(s, e)] = {"start": s, "end": e, "keep": k}
        return [seen[k] for k in sorted(seen)]

    def cuts(self, stage: int) -> dict[int, dict[str, list[int]]]:
        """block → unit kind → removed indices, for one width stage."""
        out: dict[int, dict[str, list[int]]] = {}
        for u in self.units:
            if u.stage == stage:
                out.setdefault(u.block, {})[u.unit] = list(u.removed)
        return out

    @property
    def stages(self) -> int:
        return max((u.stage for u in self.units), default=0)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, default=_plain) + "\n")

    @classmethod
    def from_dict(cls, d: dict, source: str = "plan") -> "Plan":
        if not isinstance(d, dict) or "rows" not in d:
            raise ConfigError(f"{source}: not a layerwise plan (no 'rows')")
        version = d.get("version", 1)
        if version not in (1, PLAN_VERSION):
            raise ConfigError(f"{source}: plan version {version!r} is not supported (this layerwise reads 1 and "
                              f"{PLAN_VERSION})")
        typed = {key: _typed_rows(d.get(key) or [], cls_, key, source) for key, cls_ in _KINDS.items()}
        rows = []
        known = set(PlanRow.__dataclass_fields__)
        for i, r in enumerate(d["rows"]):
            if not isinstance(r, dict) or "name" not in r:
                raise ConfigError(f"{source}: row {i} has no 'name'")
            extra = set(r) - known
            if extra:
                raise ConfigError(f"{source}: row {i} ({r['name']}) has unknown field(s) {', '.join(sorted(extra))}")
            try:
                row = PlanRow(**{**r, "shape": tuple(r.get("shape", (0, 0)))})
            except TypeError as e:
                raise ConfigError(f"{source}: row {i} ({r['name']}): {e}") from e
            rows.append(row)
        return cls(rows, d.get("meta", {}), **typed)

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"plan file {path} does not exist")
        try:
            d = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"plan file {path} is not valid JSON: {e}") from e
        return cls.from_dict(d, source=str(path))

    # --- checks ---------------------------------------------------------------------------------
    def validate_blocks(self, num_blocks: int, source: str = "plan") -> None:
        """Block rows must name every block of this model once; an interval covers its removed blocks."""
        if not self.blocks:
            raise ConfigError(f"{source} has no block rows (not a depth plan)")
        idx = [b.block for b in self.blocks]
        if sorted(idx) != list(range(num_blocks)):
            raise ConfigError(f"{source} lists blocks {sorted(set(idx))[:8]}..., the model has {num_blocks} "
                              f"(blocks 0..{num_blocks - 1}, each once): a plan for another model?")
        for b in self.blocks:
            if b.action not in BLOCK_ACTIONS:
                raise ConfigError(f"{source}: block {b.block}: action must be keep or remove (got {b.action!r})")
            if b.interval is not None:
                ok = (isinstance(b.interval, list) and len(b.interval) == 3
                      and all(isinstance(x, int) for x in b.interval)
                      and 0 <= b.interval[0] <= b.interval[2] <= b.interval[1] < num_blocks)
                if not ok:
                    raise ConfigError(f"{source}: block {b.block}: interval must be [start, end, keep] with "
                                      f"start <= keep <= end < {num_blocks} (got {b.interval!r})")
        removed = self.removed_blocks()
        if not 1 <= len(removed) < num_blocks:
            raise ConfigError(f"{source} removes {len(removed)} of {num_blocks} blocks; remove at least one and "
                              "keep at least one")
        for iv in self.intervals():
            for i in range(iv["start"], iv["end"] + 1):
                want = "keep" if i == iv["keep"] else "remove"
                if self.blocks[idx.index(i)].action != want:
                    raise ConfigError(f"{source}: interval [{iv['start']}, {iv['end']}] keeps block {iv['keep']}, "
                                      f"so block {i} must be '{want}'")

    def validate_units(self, widths: list[dict], source: str = "plan") -> None:
        """Unit rows of stage 1 must fit this model's widths (later stages fit the shrunk model)."""
        if not self.units:
            raise ConfigError(f"{source} has no unit rows (not a width plan)")
        for u in self.units:
            if u.unit not in UNIT_KINDS:
                raise ConfigError(f"{source}: unit kind must be one of {', '.join(UNIT_KINDS)} (got {u.unit!r})")
            if not 0 <= u.block < len(widths):
                raise ConfigError(f"{source}: block {u.block} does not exist; the model has {len(widths)} blocks "
                                  "(a plan for another model?)")
            if u.stage == 1:
                have = {"kv_group": widths[u.block]["num_key_value_heads"],
                        "mlp_channel": widths[u.block]["intermediate_size"]}.get(u.unit)
                if u.total is not None and have is not None and u.total != have:
                    raise ConfigError(f"{source}: block {u.block} has {have} {u.unit}s, the plan was made for "
                                      f"{u.total} (a plan for another model?)")
                if have is not None and any(not 0 <= i < have for i in u.removed):
                    raise ConfigError(f"{source}: block {u.block}: {u.unit} indices must be in [0, {have})")
                if have is not None and len(set(u.removed)) >= have:
                    raise ConfigError(f"{source}: block {u.block}: cannot remove every {u.unit}")

    def validate(self, shapes: dict[str, tuple[int, int]] | None = None, methods: set[str] | None = None) -> None:
        if self.meta.get("kind") == "analysis":
            raise ConfigError("the plan is an analysis (scores, no budgets): prune or quantize it with "
                              "--allocation/--order, or set each row's sparsity or bits before replaying it")
        seen = set()
        for r in self.rows:
            if r.name in seen:
                raise ConfigError(f"plan lists {r.name} twice")
            seen.add(r.name)
            if shapes is not None:
                if r.name not in shapes:
                    raise ConfigError(f"plan row {r.name} names no linear layer of this model")
                if tuple(r.shape) != tuple(shapes[r.name]):
                    raise ConfigError(f"plan row {r.name} has shape {tuple(r.shape)}, the model has "
                                      f"{tuple(shapes[r.name])}")
            if not isinstance(r.sparsity, (int, float)) or math.isnan(r.sparsity) or not 0 <= r.sparsity < 1:
                raise ConfigError(f"plan row {r.name}: sparsity must be in [0, 1) (got {r.sparsity})")
            if r.pattern != "unstructured":
                n, m = parse_nm(r.pattern)
                if r.shape[1] % m:
                    raise ConfigError(f"plan row {r.name}: pattern {r.pattern} needs in_features divisible by {m}")
            if r.bits is not None and (not isinstance(r.bits, int) or not 2 <= r.bits <= 8):
                raise ConfigError(f"plan row {r.name}: bits must be an integer from 2 to 8 (got {r.bits})")
            if methods is not None and r.method not in methods:
                raise ConfigError(f"plan row {r.name}: unknown method '{r.method}'; choose one of "
                                  f"{', '.join(sorted(methods))}")

    # --- display --------------------------------------------------------------------------------
    def table(self, title: str = "plan", max_rows: int | None = None):
        from rich.table import Table

        t = Table(title=title, title_justify="left")
        quant = any(r.bits is not None for r in self.rows)
        cols = (("layer", "shape", "method", "bits", "group", "recon err", "scores") if quant else
                ("layer", "shape", "method", "pattern", "sparsity", "zeros", "recon err", "scores"))
        for col in cols:
            t.add_column(col, justify="right" if col in ("sparsity", "zeros", "recon err", "bits", "group") else "left")
        rows = self.rows if max_rows is None else self.rows[:max_rows]
        for r in rows:
            err = "-" if r.recon_error is None else f"{r.recon_error:.4f}"
            sc = " ".join(f"{k}={v:.3g}" for k, v in r.scores.items() if isinstance(v, (int, float)))
            if quant:
                t.add_row(r.name, f"{r.shape[0]}x{r.shape[1]}", r.method, str(r.bits), str(r.group_size), err, sc)
            else:
                t.add_row(r.name, f"{r.shape[0]}x{r.shape[1]}", r.method, r.pattern, f"{_row_sparsity(r):.3f}",
                          "-" if r.zeros is None else f"{r.zeros:,}", err, sc)
        if max_rows is not None and len(self.rows) > max_rows:
            t.add_row(*([f"... {len(self.rows) - max_rows} more"] + [""] * (len(cols) - 1)))
        if quant:
            t.caption = f"{len(self.rows)} linears, {self.total_params:,} parameters, nominal bits {self.mean_bits():.4f}"
        else:
            ms = self.measured_sparsity()
            t.caption = (f"{len(self.rows)} linears, {self.total_params:,} parameters, planned sparsity "
                         f"{self.mean_sparsity():.4f}" + (f", measured {ms:.4f}" if ms is not None else ""))
        return t


def parse_nm(nm: str | tuple | None) -> tuple[int, int] | None:
    """'2:4' → (2, 4): at most N non-zeros in every M consecutive inputs (NVIDIA semantics)."""
    if nm is None or nm == "" or nm == "none":
        return None
    if isinstance(nm, tuple):
        n, m = nm
    else:
        try:
            n_s, m_s = str(nm).split(":")
            n, m = int(n_s), int(m_s)
        except ValueError as e:
            raise ConfigError(f"--nm must look like N:M, e.g. 2:4 (got {nm!r})") from e
    if not (1 <= n < m):
        raise ConfigError(f"N:M needs 1 <= N < M (got {n}:{m}): N weights are kept in every group of M")
    return int(n), int(m)


def nm_str(nm: tuple[int, int] | None) -> str:
    return "unstructured" if nm is None else f"{nm[0]}:{nm[1]}"


def _plain(x):
    """numpy scalars and other number-likes as plain JSON values."""
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def _typed_rows(items, cls_, key: str, source: str) -> list:
    if not isinstance(items, list):
        raise ConfigError(f"{source}: '{key}' must be a list of rows")
    known = set(cls_.__dataclass_fields__)
    out = []
    for i, r in enumerate(items):
        if not isinstance(r, dict):
            raise ConfigError(f"{source}: {key}[{i}] is not a mapping")
        extra = set(r) - known
        if extra:
            raise ConfigError(f"{source}: {key}[{i}] has unknown field(s) {', '.join(sorted(extra))}; "
                              f"allowed: {', '.join(cls_.__dataclass_fields__)}")
        try:
            row = cls_(**r)
        except TypeError as e:
            raise ConfigError(f"{source}: {key}[{i}]: {e}") from e
        out.append(row)
    return out


def _row_sparsity(r: PlanRow) -> float:
    if r.pattern != "unstructured":
        n, m = (int(x) for x in r.pattern.split(":"))
        return 1 - n / m
    return r.sparsity
