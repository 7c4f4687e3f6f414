"""The README's table of modules names every module of `agent/`, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_module_table_matches_the_code() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| module | owns |") : readme.index("Also `config/agent.toml`")]
    named = set()
    for row in table.splitlines()[2:]:
        first = row.split("|")[1] if row.startswith("|") else ""
        named.update(re.findall(r"`([a-z_]+)`", first))
    agent = ROOT / "agent"
    modules = {p.stem for p in agent.glob("*.py") if p.stem != "__init__"}
    packages = {p.parent.name for p in agent.glob("*/__init__.py")}
    assert named == modules | packages
    # A package's modules are named in its row.
    for package in packages:
        row = next(r for r in table.splitlines() if r.startswith(f"| `{package}` |"))
        for module in (agent / package).glob("*.py"):
            if module.stem not in ("__init__", "errors"):
                assert f"`{module.stem}`" in row, (package, module.stem)
