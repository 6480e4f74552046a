"""Data: data sets (loaders, uint8 on the device), augmentation, the order of examples.

May import: torch, numpy, `tune_lip.errors`. Nothing here knows of models, studies or Ray.
The data set names of `tune_lip.data.datasets` are re-exported here (the module this package
replaced), so ``from tune_lip.data import load_dataset`` keeps working.
"""

from tune_lip.data.datasets import (
    DATASETS,
    ImageData,
    convert_and_center,
    convert_npz,
    load_dataset,
)

__all__ = ["DATASETS", "ImageData", "load_dataset", "convert_npz", "convert_and_center"]
