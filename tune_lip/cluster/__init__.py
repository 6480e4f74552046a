"""The cluster: ``cluster.yaml`` checks, trial placement on GPU types, step-time calibration.

May import: the studies and everything below them, and Ray's cluster APIs; not the Tune layer.
The names of `tune_lip.cluster.cluster_file` are re-exported here (the module this package
replaced), so ``from tune_lip.cluster import load_cluster_config`` keeps working.
"""

from tune_lip.cluster.cluster_file import (
    RAY_PORTS,
    check_cluster_config,
    load_cluster_config,
    pinned_requirements,
    validate_with_ray,
)

__all__ = ["RAY_PORTS", "load_cluster_config", "validate_with_ray", "check_cluster_config",
           "pinned_requirements"]
