"""Pluggable depth families (PPCL stage E): one checkpoint, many depths, chosen at load time.

An output of `layerwise depth --family` is a stock model directory (the pruned model at the full
requested ratio, loadable by `from_pretrained`) plus `plugins/`:

    plugins/plugins.json              intervals, their activation order, the dense config, how the
                                      root's blocks map onto the dense model's
    plugins/teacher_blocks.safetensors  the dense model's blocks inside the intervals ("{i}.{param}")
    plugins/students.safetensors      every interval's trained student ("{s}-{e}.{param}")

`layerwise.load(path, depth=N)` rebuilds the dense model from the root and the teacher blocks, and
plugs in the students of the nested subset with N blocks (or `depth=["3-5", "8-9"]`: any subset by
interval). Students were trained teacher-forced, independently of each other, so every subset is a
valid model; only the evaluated ones (plugins.json "measured") are known to be good (PPCL pitfall 9).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, ModelLoadError
from ..io.formats import Format, register_format
from ..models.adapters import get_adapter
from ..models.standin import LinearStandIn

DIR = "plugins"
MARKER = "plugins.json"
VERSION = 1


def key(iv: dict) -> str:
    return f"{iv['start']}-{iv['end']}"


def nested_order(intervals: list[dict]) -> list[dict]:
    """Activation order of the nested family: cheapest predicted cost per removed block first."""
    return sorted(intervals, key=lambda iv: (iv.get("cost_per_block", 0.0), iv["start"]))


def family_depths(meta: dict) -> dict[int, list[str]]:
    """Depth (number of blocks) → the interval keys active at that depth, for every nested prefix."""
    L = meta["num_blocks"]
    out, active, removed = {L: []}, [], 0
    for k in meta["order"]:
        s, e = (int(x) for x in k.split("-"))
        active.append(k)
        removed += e - s
        out[L - removed] = list(active)
    return out


def _student_kind(st: nn.Module) -> str:
    return "linear" if isinstance(st, LinearStandIn) else "block"


def write(directory: Path, teacher: nn.Module, intervals: list[dict], students: dict, root_active: list[str],
          measured: dict | None = None) -> None:
    """The plug-in files next to a root model in which the intervals `root_active` are plugged in."""
    from safetensors.torch import save_file

    adapter = get_adapter(teacher)
    blocks = adapter.block_list()
    L = len(blocks)
    d = Path(directory) / DIR
    d.mkdir(parents=True, exist_ok=True)
    inside = sorted({i for iv in intervals for i in range(iv["start"], iv["end"] + 1)})
    save_file({f"{i}.{n}": t.detach().contiguous() for i in inside for n, t in blocks[i].state_dict().items()},
              str(d / "teacher_blocks.safetensors"))
    save_file({f"{k}.{n}": t.detach().contiguous() for k, st in students.items() for n, t in st.state_dict().items()},
              str(d / "students.safetensors"))
    # which dense block (or interval student) each block of the root model is
    active = {k: iv for iv in intervals if (k := key(iv)) in root_active}
    root_blocks, skip = [], set()
    for i in range(L):
        if i in skip:
            continue
        hit = next((k for k, iv in active.items() if iv["start"] == i), None)
        if hit is not None:
            root_blocks.append(hit)
            skip |= set(range(active[hit]["start"] + 1, active[hit]["end"] + 1))
        else:
            root_blocks.append(i)
    cfg = teacher.config
    dense_config = dict(cfg) if hasattr(teacher, "register_to_config") else cfg.to_dict()
    # "keep": no trained student, the interval keeps one of its blocks (a family without healing)
    kinds = {key(iv): _student_kind(students[key(iv)]) if key(iv) in students else "keep" for iv in intervals}
    meta = {"version": VERSION, "num_blocks": L, "blocks_path": adapter.blocks_path,
            "intervals": [{**iv, "student": kinds[key(iv)]} for iv in intervals],
            "order": [key(iv) for iv in nested_order(intervals)], "root_active": list(root_active),
            "root_blocks": root_blocks, "root_exact": all(kinds[k] != "linear" for k in root_active),
            "dense_config": json.loads(json.dumps(dense_config, default=str)), "measured": measured or {}}
    (d / MARKER).write_text(json.dumps(meta, indent=1) + "\n")


def read_meta(path: Path) -> dict | None:
    f = Path(path) / DIR / MARKER
    if not f.exists():
        return None
    try:
        meta = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{f} is not valid JSON: {e}") from e
    if meta.get("version") != VERSION:
        raise ModelLoadError(f"{f}: unknown plug-in format version {meta.get('version')!r}")
    return meta


def resolve_depth(meta: dict, depth) -> list[str]:
    """The interval keys to plug in for `depth`: a number of blocks of the nested family, or keys."""
    L = meta["num_blocks"]
    known = {key(iv) for iv in meta["intervals"]}
    if isinstance(depth, (list, tuple)):
        bad = [k for k in depth if k not in known]
        if bad:
            raise ConfigError(f"depth: unknown interval(s) {', '.join(map(str, bad))}; this checkpoint has "
                              f"{', '.join(sorted(known, key=lambda k: int(k.split('-')[0])))}")
        return list(depth)
    fam = family_depths(meta)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth not in fam:
        raise ConfigError(f"depth={depth!r} is not in this family; available depths: "
                          f"{', '.join(str(n) for n in sorted(fam))} blocks (of {L}), or a list of intervals")
    return fam[depth]


def _dense_like(root: nn.Module, meta: dict) -> nn.Module:
    cfg = meta["dense_config"]
    if hasattr(root, "register_to_config"):           # diffusers
        return type(root).from_config(cfg)
    return type(root)(type(root.config).from_dict(cfg))


def plug(root: nn.Module, path: Path, depth) -> nn.Module:
    """The model with the intervals of `depth` plugged in (see the module docstring)."""
    from safetensors.torch import load_file

    from .depth import assemble

    meta = read_meta(path)
    if meta is None:
        raise ConfigError(f"{path} is not a depth family (no {DIR}/{MARKER}); `depth=` needs `layerwise depth --family`")
    want = resolve_depth(meta, depth)
    d = Path(path) / DIR
    try:
        teacher_blocks = load_file(str(d / "teacher_blocks.safetensors"))
        student_tensors = load_file(str(d / "students.safetensors"))
    except Exception as e:  # a damaged file surfaces as several exception types
        raise ModelLoadError(f"cannot read the plug-in tensors in {d}: {type(e).__name__}: {e}") from e
    dense = _dense_like(root, meta).to(next(root.parameters()).dtype)
    prefix = meta["blocks_path"] + "."
    state = {}
    for n, t in root.state_dict().items():
        if not n.startswith(prefix):
            state[n] = t
            continue
        j, _, rest = n[len(prefix):].partition(".")
        src = meta["root_blocks"][int(j)]
        if isinstance(src, int):
            state[f"{prefix}{src}.{rest}"] = t
    for n, t in teacher_blocks.items():
        i, _, rest = n.partition(".")
        state[f"{prefix}{i}.{rest}"] = t
    missing, unexpected = dense.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"{path}: the root model and {DIR}/ do not rebuild the dense model "
                             f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    blocks = get_adapter(dense).block_list()
    students = {}
    for iv in meta["intervals"]:
        k = key(iv)
        if k not in want or iv.get("student") == "keep":
            continue
        st = LinearStandIn(student_tensors[f"{k}.proj.weight"].shape[1]) if iv.get("student") == "linear" \
            else copy.deepcopy(blocks[int(iv.get("keep", (iv["start"] + iv["end"]) // 2))])
        st.load_state_dict({n[len(k) + 1:]: t for n, t in student_tensors.items() if n.startswith(k + ".")})
        students[k] = st
    active = [iv for iv in meta["intervals"] if key(iv) in want]
    model = assemble(dense, active, students) if active else dense
    return model.to(next(root.parameters()).dtype).eval()


def _detect(path: Path) -> bool:
    meta = read_meta(path) if (Path(path) / DIR / MARKER).exists() else None
    return meta is not None and not meta.get("root_exact", True)


def _load_default(path: Path, dtype: torch.dtype) -> nn.Module:
    """A family whose root cannot hold its students (linear stand-ins): the root's intervals plugged in."""
    root = _root_loader(path, dtype)
    return plug(root, path, read_meta(path)["root_active"])


def _root_loader(path: Path, dtype: torch.dtype) -> nn.Module:
    from ..io.diffusers_format import diffusers_config, load_diffusers

    if diffusers_config(path) is not None:
        return load_diffusers(path, dtype)
    from transformers import AutoConfig

    from ..models.adapters import model_class

    return model_class(AutoConfig.from_pretrained(path)).from_pretrained(path, dtype=dtype).eval()


register_format(Format("depth-family", f"{DIR}/{MARKER} with linear stand-ins", _detect, _load_default,
                       "a depth family whose root holds linear stand-ins (PPCL)"), first=True)
