"""Dataset adapters, registered by name in ``DATASETS``."""

from raybench.data.datasets.base import DATASETS, Dataset, LayoutError, get_dataset
from raybench.data.datasets import affwild2, ravdess, synthetic  # noqa: F401  (register)

__all__ = ["DATASETS", "Dataset", "LayoutError", "get_dataset"]
