"""Methods and their registries, keyed by the names users type.

A method is one small class: a `name`, a `kind` (pruner, quantizer, allocator, ...), a one-line
`description`, a pydantic `Config` (validated, versioned, serialisable into plans and manifests) and
the statistics or resources it `needs`. Registering it under its name is all it takes for the CLI
(`--method NAME`, its `--help` choices), recipes, plans and the generated method tables to know it:
adding a method is one file.
"""
from __future__ import annotations

from typing import Any, ClassVar, Generic, Iterator, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError

# What a method may ask of the driver. The engine collects only what some method of a pass needs.
NEEDS = frozenset({
    "calibration",    # calibration activations at all (a forward pass over the data)
    "gram",           # X^T X of each linear's input over every calibration token (Hessian methods)
    "first_moment",   # Σx of each linear's input
    "gradients",      # backward passes
    "loss",           # forward passes with labels on the whole model
    "whole_model",    # the whole model in memory (no block streaming)
    "training",       # a training loop
})


class MethodConfig(BaseModel):
    """Base of every method's options: unknown fields are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: ClassVar[int] = 1


class Method:
    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: MethodConfig | dict | None = None, **options: Any):
        self.config = make_config(self.Config, config, options, f"{self.kind} '{self.name}'")

    def config_dict(self) -> dict:
        """What goes into a plan row or a manifest: name, config version and every option."""
        return {"name": self.name, "version": self.Config.version, **self.config.model_dump()}


def make_config(cls: type[MethodConfig], config, options: dict, where: str) -> MethodConfig:
    if isinstance(config, cls) and not options:
        return config
    data = {**(config.model_dump() if isinstance(config, BaseModel) else dict(config or {})), **options}
    data.pop("name", None)
    data.pop("version", None)
    try:
        return cls(**data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err.get("loc", ())) or "config"
        raise ConfigError(f"{where}: option '{field}': {err.get('msg', 'invalid')} "
                          f"(got {err.get('input')!r}; fields: {', '.join(cls.model_fields) or 'none'})") from e


M = TypeVar("M", bound=type)


class Registry(Generic[M]):
    """Name → method class for one kind. Unknown names are errors that list the choices."""

    def __init__(self, kind: str, option: str, what: str):
        self.kind = kind
        self.option = option          # the CLI option that takes these names
        self.what = what              # how an error names the thing ("pruning method")
        self._items: dict[str, M] = {}
        ALL[kind] = self

    def register(self, cls: M) -> M:
        name = getattr(cls, "name", "")
        if not name or not isinstance(name, str):
            raise TypeError(f"{cls.__name__} needs a class attribute 'name' to be registered as a {self.kind}")
        if name in self._items and self._items[name] is not cls:
            raise ValueError(f"a {self.kind} named '{name}' is already registered ({self._items[name].__name__})")
        unknown = set(getattr(cls, "needs", ())) - NEEDS
        if unknown:
            raise ValueError(f"{cls.__name__} declares unknown needs {sorted(unknown)}; known: {sorted(NEEDS)}")
        if isinstance(cls, type) and issubclass(cls, Method):
            cls.kind = self.kind
        self._items[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def __getitem__(self, name: str) -> M:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def items(self):
        return self._items.items()

    def get(self, name: str) -> M:
        if name not in self._items:
            raise ConfigError(f"unknown {self.what} '{name}' ({self.option}); choose one of {', '.join(self._items)}")
        return self._items[name]

    def create(self, name: str, config: MethodConfig | dict | None = None, **options: Any):
        return self.get(name)(config, **options)

    def choices(self) -> str:
        """'a | b | c' for CLI help."""
        return " | ".join(self._items)

    def rows(self) -> list[dict]:
        """One row per method, for generated docs and `layerwise methods`."""
        out = []
        for name, cls in self._items.items():
            fields = getattr(getattr(cls, "Config", None), "model_fields", {})
            out.append({"kind": self.kind, "name": name, "description": getattr(cls, "description", ""),
                        "needs": sorted(getattr(cls, "needs", ())),
                        "options": {k: f.default for k, f in fields.items()}})
        return out


ALL: dict[str, Registry] = {}
