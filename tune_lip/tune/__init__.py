"""Ray Tune orchestration: the YAML spec, searchers, schedulers, callbacks, launch, rehearsal.

May import: every layer below (trainables, cluster, studies, nn, data, analysis, errors).
"""
