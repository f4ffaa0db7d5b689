"""Dataset adapters, registered by name in ``DATASETS``."""

from raybench.data.datasets.base import DATASETS, Dataset, LayoutError, get_dataset
from raybench.data.datasets import afew, affwild2, crema_d, csv_manifest, ravdess, synthetic  # noqa: F401

__all__ = ["DATASETS", "Dataset", "LayoutError", "get_dataset"]
