"""Methods, registered by name in ``METHODS``; built with ``create_method``.

A method class declares ``tasks`` (categorical and/or continuous), ``Options`` (its
config keys: a pydantic model; ``defaults`` is derived from it) and ``needs_flow``; it is
built with an instance of its ``Options``. The training
loop knows a method only through this registry.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch.nn as nn

from raybench.methods.base import METHODS, Method, MethodOptions, register_method
from raybench.methods import baselines, de3, embeddings, schoneveld2021, zhang2021, zhou2019  # noqa: F401  (register)


def create_method(name: str, task: str, num_outputs: int, options: MethodOptions | None = None,
                  **kw: Any) -> nn.Module:
    """Build method ``name`` for ``task`` with ``num_outputs`` classes (or 2 for valence/arousal).

    ``options``: the method's typed keys (``cls.options(values)``); or give its keys in ``kw``. ``kw``
    also holds the data keys ``n_audio_features``, ``audio_steps_per_frame`` and ``fps`` (each passed
    only to a method whose ``__init__`` names it).
    """
    cls = METHODS.get(name)
    if task not in cls.tasks:
        raise ValueError(f"method {name!r} does not support task {task!r}; it supports {', '.join(cls.tasks)}")
    data = {k: kw.pop(k) for k in Method.DATA_KEYS if k in kw}
    if options is None:
        options = cls.options(kw)
    elif kw:
        raise ValueError(f"method {name!r}: keys {sorted(kw)} given beside options")
    if not isinstance(options, cls.Options):
        raise TypeError(f"method {name!r} takes {cls.Options.__name__}, got {type(options).__name__}")
    takes = inspect.signature(cls.__init__).parameters
    return cls(task, num_outputs, options, **{k: v for k, v in data.items() if k in takes})


__all__ = ["METHODS", "Method", "MethodOptions", "create_method", "register_method"]
