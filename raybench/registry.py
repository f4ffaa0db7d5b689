"""Name -> object registries with helpful errors, filled lazily.

Unknown names get a "did you mean" hint; registering a name twice is an error. The project's
registries live here, empty: each names the module whose import registers its entries (the code
registers itself with a decorator, as timm's ``@register_model`` does), and that module is imported
the first time a name is looked up. So the config can check names without importing data, model or
training code itself (the layers in pyproject.toml's import-linter contracts).
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Generic, Iterator, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown or duplicate name. ``str()`` gives the readable message."""

    def __str__(self) -> str:  # KeyError quotes its message; we do not want that
        return str(self.args[0]) if self.args else ""


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


class Registry(Generic[T]):
    def __init__(self, kind: str, module: str | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._module = module  # imported on first look-up: it registers the entries
        self._loaded = module is None

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self._module)

    def register(self, name: str, obj: T | None = None) -> Any:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is None."""

        def _add(o: T) -> T:
            if name in self._items:
                raise RegistryError(f"{self.kind} {name!r} is already registered")
            self._items[name] = o
            return o

        if obj is None:
            return _add
        return _add(obj)

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def get_or_none(self, name: object) -> T | None:
        self._load()
        return self._items.get(name) if isinstance(name, str) else None

    def unknown_message(self, name: str) -> str:
        return (
            f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; "
            f"known: {', '.join(self.names())}"
        )

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._items)


# the project's registries (entries register themselves when their module is imported)
METHODS: Registry[Any] = Registry("method", "raybench.methods")
DATASETS: Registry[Any] = Registry("dataset", "raybench.data.datasets")
FUSIONS: Registry[Any] = Registry("fusion", "raybench.nn.fusion")
