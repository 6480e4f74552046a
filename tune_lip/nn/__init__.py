"""Building blocks in pure torch: models, losses, optimizers, SAM, the scaling-rule maths.

May import: torch, numpy, `tune_lip.errors`, `tune_lip.data`. Nothing here knows of studies or Ray.
"""
