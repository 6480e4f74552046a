"""Modules that moved into the layer folders (issue 12) stay importable under their old names,
as the same module objects: pickles of older experiments (``tuner.pkl``) and user code that
imports e.g. ``tune_lip.spec`` or ``tune_lip.train_loop`` keep working."""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys

import pytest

import tune_lip
from tune_lip.tune.callbacks import ParquetResultsCallback


@pytest.mark.parametrize("old, new", sorted(tune_lip._MOVED.items()))
def test_an_old_module_name_is_the_moved_module(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)


def test_a_submodule_of_a_moved_package_is_not_loaded_twice():
    import tune_lip.models.aol as old
    import tune_lip.nn.models.aol as new

    assert old is new and old.__name__ == "tune_lip.nn.models.aol"


def test_the_replaced_modules_names_come_from_their_packages():
    from tune_lip.cluster import load_cluster_config
    from tune_lip.cluster.cluster_file import load_cluster_config as moved_loader
    from tune_lip.data import load_dataset
    from tune_lip.data.datasets import load_dataset as moved

    assert load_dataset is moved and load_cluster_config is moved_loader


def test_a_pickle_naming_an_old_path_loads_in_a_fresh_process():
    # As in tuner.pkl written before the move: the class under its old module path (protocol 0
    # names it as text, so the name can be edited in place).
    data = pickle.dumps(ParquetResultsCallback("x"), protocol=0).replace(b"tune_lip.tune.callbacks", b"tune_lip.callbacks")
    code = "import pickle, sys; cb = pickle.loads(sys.stdin.buffer.read()); print(type(cb).__module__, cb.experiment)"
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, timeout=120, check=True)
    assert out.stdout.decode().split() == ["tune_lip.tune.callbacks", "x"]
