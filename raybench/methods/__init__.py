"""Methods, registered by name in ``METHODS``; built with ``create_method``.

A method class declares ``tasks`` (categorical and/or continuous), ``defaults``
(its config keys and their default values) and ``needs_flow``. The training
loop knows a method only through this registry.
"""

from __future__ import annotations

import torch.nn as nn

from raybench.methods.base import METHODS, Method, register_method
from raybench.methods import baselines, de3, schoneveld2021, zhang2021, zhou2019  # noqa: F401  (register)


def create_method(name: str, task: str, num_outputs: int, **cfg) -> nn.Module:
    """Build method ``name`` for ``task`` with ``num_outputs`` classes (or 2 for valence/arousal).

    ``cfg`` holds the method's keys (its ``defaults`` fill the rest) plus the data keys
    ``n_audio_features``, ``audio_steps_per_frame`` and ``fps`` (each passed only to a method whose
    ``__init__`` names it).
    """
    cls = METHODS.get(name)
    if task not in cls.tasks:
        raise ValueError(f"method {name!r} does not support task {task!r}; it supports {', '.join(cls.tasks)}")
    unknown = set(cfg) - set(cls.defaults) - set(Method.DATA_KEYS) - {"name"}
    if unknown:
        raise ValueError(f"method {name!r}: unknown keys {sorted(unknown)}; its keys: {sorted(cls.defaults)}")
    from raybench.schema import check

    problems = check(cls.Options, {k: v for k, v in cfg.items() if k in cls.defaults}, "method.", f" ({name})")[1]
    if problems:
        raise ValueError("; ".join(problems))
    import inspect

    takes = inspect.signature(cls.__init__).parameters
    cfg = {k: v for k, v in cfg.items() if k not in Method.DATA_KEYS or k in takes}  # data keys it uses
    kw = {**cls.defaults, **{k: v for k, v in cfg.items() if k != "name"}}
    return cls(task=task, num_outputs=num_outputs, **kw)


__all__ = ["METHODS", "Method", "create_method", "register_method"]
