"""The README's layout names every package and module of halm (so it cannot silently fall behind the tree)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_layout_names_every_module():
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("## Layout"):]
    block = block[block.index("```"):]
    block = block[: block.index("```", 3)]
    missing = []
    for f in sorted((ROOT / "halm").rglob("*.py")):
        rel = f.relative_to(ROOT)
        if f.name in ("__init__.py", "__main__.py") or "synth" in rel.parts:
            continue  # packages are named by their folder; synth/ is described as a whole
        if len(rel.parts) == 2:  # halm/x.py
            ok = str(rel) in block
        else:  # halm/pkg/x.py: the package is listed and the module named in its entry
            ok = f"halm/{rel.parts[1]}/" in block and re.search(rf"\b{re.escape(f.stem)}\b", block) is not None
        if not ok:
            missing.append(str(rel))
    assert not missing, f"README's layout does not name {missing}"
