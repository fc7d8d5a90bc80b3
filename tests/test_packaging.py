"""pyproject lists every package, so a non-editable install ships all of vlpipe."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "vlpipe").rglob("__init__.py")}
    found |= {"vlpipe.stages"} if (ROOT / "stages" / "__init__.py").exists() else set()
    assert found <= listed, f"add to pyproject packages: {sorted(found - listed)}"
    assert cfg["package-dir"]["vlpipe.stages"] == "stages"
