"""What a method is: an ``nn.Module`` with declared tasks, config keys and inputs."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn as nn

from raybench.registry import Registry


class Method(nn.Module):
    """Base class. ``forward(batch) -> {"logits": (B, C)}`` or ``{"va": (B, T, 2)}``."""

    tasks: ClassVar[tuple[str, ...]] = ("categorical", "continuous")
    defaults: ClassVar[dict[str, Any]] = {}
    needs_flow: ClassVar[bool] = False
    DATA_KEYS: ClassVar[tuple[str, ...]] = ("n_audio_features", "audio_steps_per_frame")

    def __init__(self, task: str, num_outputs: int):
        super().__init__()
        self.task = task
        self.num_outputs = num_outputs

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The method's training loss (categorical: cross-entropy; continuous: 1 - CCC)."""
        from raybench.train.losses import task_loss

        return task_loss(self.task, out, batch)


METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str):
    def deco(cls: type[Method]) -> type[Method]:
        cls.method_name = name
        return METHODS.register(name, cls)

    return deco
