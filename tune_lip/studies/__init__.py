"""The studies: one Ray-free training loop per study, its typed config and its budget.

May import: `tune_lip.nn`, `tune_lip.data`, `tune_lip.analysis`, `tune_lip.errors`; never Ray.
"""
