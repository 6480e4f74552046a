# The two README commands. Each creates .venv (Python 3.11) and installs what it needs.
#   make demo   - a real search on a local Ray (digits, offline), then analysis and plots
#   make test   - the test suite (what CI runs through .ci/run)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Keep every local Ray node on 127.0.0.1 (ray 2.60).
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export MPLBACKEND := Agg

.PHONY: demo test install clean

$(BIN)/tune-lip: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/tune-lip

demo: install
	$(BIN)/tune-lip demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
