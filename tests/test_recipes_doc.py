"""docs/RECIPES.md is the record of what each shipped space runs: a space it does not name has
no stated recipe, so every shipped space must be in its table."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_space_has_a_recipe_entry():
    doc = (ROOT / "docs" / "RECIPES.md").read_text()
    table = {line.split("|")[1].strip().strip("`") for line in doc.splitlines() if line.startswith("| `")}
    spaces = {p.stem for p in (ROOT / "search_spaces").glob("*.yaml")}
    assert spaces <= table, f"spaces without a row in docs/RECIPES.md: {sorted(spaces - table)}"
    for anchor in ("lipschitz", "cpl-convnets", "sphere", "scaling-rules", "noisy-quadratic-model"):
        assert f"(#{anchor})" in doc   # the table links its sections
