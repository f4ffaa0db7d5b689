"""Dataset adapters, registered by name in ``DATASETS``."""

from raybench.data.datasets.base import DATASETS, Dataset, LayoutError, get_dataset
from raybench.data.datasets import (  # noqa: F401  (register)
    afew, affwild2, crema_d, csv_manifest, msp_improv, ravdess, recola, synthetic)

__all__ = ["DATASETS", "Dataset", "LayoutError", "get_dataset"]
