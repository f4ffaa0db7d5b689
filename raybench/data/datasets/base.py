"""What a dataset adapter is: a task, class names and a manifest parser."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from raybench.paths import cache_home
from raybench.data.manifest import Clip
from raybench.registry import DATASETS
from raybench.schema import DataConfig

# video files the adapters that find videos by name accept (compared lower-case)
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".flv")


def is_video(p: Path) -> bool:
    return p.suffix.lower() in VIDEO_EXTS and p.is_file()


class LayoutError(FileNotFoundError):
    """A dataset root that does not match the expected layout."""


class Dataset(ABC):
    name: str = ""
    task: str = "categorical"  # categorical | continuous
    class_names: tuple[str, ...] = ()
    layout: str = ""  # one-line description of the expected tree, for error messages

    def task_for(self, data_cfg: DataConfig) -> str:
        """The task of this dataset under ``data_cfg`` (fixed except for the csv adapter)."""
        return self.task

    def class_names_for(self, data_cfg: DataConfig, clips: list[Clip]) -> tuple[str, ...]:
        return self.class_names

    def default_root(self, data_cfg: DataConfig) -> Path:
        return cache_home() / "data" / self.name

    def ensure(self, root: Path, data_cfg: DataConfig) -> Path:
        """Make sure ``root`` exists (synthetic datasets generate themselves)."""
        if not root.exists():
            raise LayoutError(f"{self.name}: data.root {str(root)!r} does not exist; expected {self.layout}")
        return root

    @abstractmethod
    def manifest(self, root: Path, data_cfg: DataConfig) -> list[Clip]:
        """Parse file names and annotations under ``root`` into clips (no decoding)."""

    def listed(self, root: Path, data_cfg: DataConfig) -> tuple[list[Clip], list[dict]]:
        """The manifest, and what it left out of the files the dataset lists (each ``left_out`` call:
        ``{"files": n, "why": text}``), for the prepare stage to record in MLflow."""
        self._left_out: list[dict] | None = []
        try:
            clips = self.manifest(root, data_cfg)
            return clips, list(self._left_out or [])
        finally:
            self._left_out = None

    def left_out(self, files: int, why: str) -> None:
        """Say that ``files`` files the dataset lists are left out, and why; under :meth:`listed` the
        prepare stage also records it (MLflow: ``data/<dataset>/left_out`` and ``data/<dataset>_left_out.json``)."""
        print(f"[raybench] {self.name}: {why}", flush=True)
        if getattr(self, "_left_out", None) is not None:
            self._left_out.append({"files": files, "why": why})

    def layout_error(self, root: Path, what: str) -> LayoutError:
        found = sorted(str(p.relative_to(root)) for p in list(root.rglob("*"))[:200])[:8]
        return LayoutError(
            f"{self.name}: {what} under {str(root)!r}; expected {self.layout}; "
            f"found: {', '.join(found) if found else '(empty folder)'}"
        )




def get_dataset(name: str) -> Dataset:
    return DATASETS.get(name)
