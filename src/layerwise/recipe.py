"""Recipes: an ordered list of compression stages in one YAML file, validated before any work.

```yaml
model: zoo:llama-12l          # optional; the command line's MODEL wins
calibration: {corpus: stdlib, nsamples: 128, seqlen: 256, seed: 0, batch_size: 8}
stages:
  - prune: {method: sparsegpt, sparsity: 0.5}
  - quantize: {quantizer: gptq, bits: 4, group_size: 128}
```

Every stage is one key (its kind) holding that stage's options; method names are checked against
the registries, so a method registered at run time is usable in a recipe at once. Errors name the
field (`stages[1].quantize.bits`) and the allowed values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError

RECIPE_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Calibration(_Strict):
    corpus: str = "stdlib"
    nsamples: int = Field(128, ge=1)
    seqlen: int = Field(256, ge=2)
    seed: int = 0
    batch_size: int | None = Field(None, ge=1)     # default: 8, fewer above 2048 tokens per batch


def _registered(registry_path: str, value: str) -> str:
    import importlib

    module, name = registry_path.rsplit(":", 1)
    reg = getattr(importlib.import_module(module), name)
    if value not in reg:
        raise ValueError(f"unknown {reg.what} '{value}'; choose one of {', '.join(reg)}")
    return value


class PruneStage(_Strict):
    method: str = "wanda"
    sparsity: float = Field(0.5, ge=0, lt=1)
    nm: str | None = None
    allocation: str = "uniform"
    allocation_options: dict = Field(default_factory=dict)
    max_sparsity: float = Field(0.99, gt=0, lt=1)
    targets: list[str] | None = None
    ignore: list[str] | None = None

    _m = field_validator("method")(lambda v: _registered("layerwise.prune:PRUNERS", v))
    _a = field_validator("allocation")(lambda v: _registered("layerwise.allocate:ALLOCATORS", v))

    def api_options(self) -> dict:
        d = self.model_dump()
        d["allocation_params"] = d.pop("allocation_options")
        return d


class QuantizeStage(_Strict):
    quantizer: str = "rtn"
    bits: float = Field(4.0, ge=2, le=8)
    high: int = Field(4, ge=2, le=8)
    low: int = Field(2, ge=2, le=8)
    order: str = "lim"
    order_seed: int = 0
    group_size: int = 128
    sym: bool = True
    act_order: bool = False
    targets: list[str] | None = None
    ignore: list[str] | None = None
    target: str | None = None
    format: Literal["compressed-tensors", "gptq"] | None = None

    _q = field_validator("quantizer")(lambda v: _registered("layerwise.quant:QUANTIZERS", v))


class DepthStage(_Strict):
    remove: Union[int, str] = "25%"
    select: str = "ppcl"
    heal: str = "none"
    heal_options: dict = Field(default_factory=dict)
    steps: int = Field(200, ge=0)
    lr: float = Field(2e-4, gt=0)
    global_batch: int = Field(16, ge=1)
    max_len: int = Field(3, ge=1)
    protect: int = Field(2, ge=0)
    family: bool = False

    _s = field_validator("select")(lambda v: _registered("layerwise.prune.depth:DEPTH_SELECTORS", v))
    _h = field_validator("heal")(lambda v: _registered("layerwise.distill.objectives:HEALERS", v))


class WidthStage(_Strict):
    params: float = Field(0.6, gt=0, lt=1)
    adaptive: bool = False
    criterion: str = "taylor"
    incremental: bool = False
    step: float = Field(0.05, gt=0, lt=1)
    tokens: int = Field(0, ge=0)
    heal: str = "kd"
    heal_options: dict = Field(default_factory=dict)
    lr: float = Field(2e-4, gt=0)
    global_batch: int = Field(16, ge=1)

    _c = field_validator("criterion")(lambda v: _registered("layerwise.prune.width:WIDTH_CRITERIA", v))
    _h = field_validator("heal")(lambda v: _registered("layerwise.distill.objectives:HEALERS", v))


class SearchStage(_Strict):
    flops: float = Field(0.5, gt=0, le=1)
    method: str = "tas"
    space: str = "width,depth"
    epochs: int | None = Field(None, ge=1)
    options: dict = Field(default_factory=dict)
    tokens: int = Field(0, ge=0)           # language models: KD healing tokens
    lr: float = Field(2e-4, gt=0)
    global_batch: int = Field(8, ge=1)
    criterion: str = "taylor"
    search_windows: int = Field(256, ge=2)
    search_seqlen: int = Field(128, ge=2)
    distill: bool = True                   # image classifiers: train the searched network
    kd: bool = True
    kd_epochs: int = Field(40, ge=1)
    inherit: bool = False
    align: str = "cwi"

    _m = field_validator("method")(lambda v: _registered("layerwise.search:SEARCHERS", v))
    _c = field_validator("criterion")(lambda v: _registered("layerwise.prune.width:WIDTH_CRITERIA", v))


class TokensStage(_Strict):
    method: str = "ftp"
    sparsity: float = Field(0.3, ge=0, lt=1)      # diffusion models: share of top-level attention tokens pruned
    options: dict = Field(default_factory=dict)
    schedule: str = "ga"
    site: int = Field(2, ge=0)
    steps: int = Field(300, ge=1)
    r: int | None = Field(None, ge=0)
    keep_ratio: float | None = Field(None, gt=0, le=1)

    _m = field_validator("method")(lambda v: _registered("layerwise.tokens:TOKEN_SELECTORS", v))


STAGES: dict[str, type[_Strict]] = {"prune": PruneStage, "quantize": QuantizeStage, "depth": DepthStage,
                                    "width": WidthStage, "search": SearchStage, "tokens": TokensStage}


class Stage(BaseModel):
    kind: str
    options: BaseModel


class Recipe(BaseModel):
    version: int = RECIPE_VERSION
    model: str | None = None
    calibration: Calibration = Field(default_factory=Calibration)
    stages: list[Stage]


def _format(e: ValidationError, prefix: str) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ()))
    where = f"{prefix}.{loc}" if loc else prefix
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
    return f"{where}: {msg}{got}"


def parse_recipe(data, source: str = "recipe") -> Recipe:
    """A recipe from its YAML/JSON data; ConfigError names the offending field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a recipe is a mapping with a 'stages' list")
    unknown = set(data) - {"version", "model", "calibration", "stages"}
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {', '.join(sorted(unknown))}; allowed: version, model, "
                          "calibration, stages")
    if data.get("version", RECIPE_VERSION) != RECIPE_VERSION:
        raise ConfigError(f"{source}: version {data.get('version')!r} is not supported (this layerwise reads "
                          f"version {RECIPE_VERSION})")
    stages_raw = data.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError(f"{source}: 'stages' must be a non-empty list of stages ({', '.join(STAGES)})")
    try:
        calib = Calibration(**(data.get("calibration") or {}))
    except ValidationError as e:
        raise ConfigError(f"{source}: {_format(e, 'calibration')}") from e
    except TypeError as e:
        raise ConfigError(f"{source}: calibration must be a mapping") from e
    stages = []
    for i, st in enumerate(stages_raw):
        if not isinstance(st, dict) or len(st) != 1:
            raise ConfigError(f"{source}: stages[{i}] must be one key, the stage kind ({', '.join(STAGES)})")
        (kind, opts), = st.items()
        if kind not in STAGES:
            raise ConfigError(f"{source}: stages[{i}]: unknown stage '{kind}'; choose one of {', '.join(STAGES)}")
        if opts is not None and not isinstance(opts, dict):
            raise ConfigError(f"{source}: stages[{i}].{kind} must be a mapping of options")
        try:
            stages.append(Stage(kind=kind, options=STAGES[kind](**(opts or {}))))
        except ValidationError as e:
            raise ConfigError(f"{source}: {_format(e, f'stages[{i}].{kind}')}") from e
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise ConfigError(f"{source}: model must be a string (zoo:NAME, a directory or a hub id)")
    return Recipe(model=model, calibration=calib, stages=stages)


def load_recipe(recipe) -> Recipe:
    """A `Recipe`, a dict, or a path to a YAML/JSON file."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return parse_recipe(recipe)
    path = Path(str(recipe)).expanduser()
    if not path.is_file():
        raise ConfigError(f"recipe file {recipe} does not exist")
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"recipe {path} is not valid YAML: {' '.join(str(e).split())}") from e
    return parse_recipe(data, source=str(path))
