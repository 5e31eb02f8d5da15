"""Print a pip constraints file that pins every dependency of embplan (the runtime list, the `test` extra and the
extras it pulls) to the lower bound that pyproject.toml allows: `name>=X` becomes `name==X`.

CI installs with it in a venv of its own and runs the fast tests, so a lower bound that the code outgrew fails
there (issue 17). A requirement without a lower bound is an error: every dependency must state what it needs.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def lower_bounds(pyproject: Path) -> dict[str, str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    name = project["name"]
    extras = project.get("optional-dependencies", {})
    reqs = list(project.get("dependencies", []))
    todo, seen = ["test"], set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for r in extras.get(extra, []):
            m = _REQ.match(r.split(";")[0])
            if m and m.group(1).lower() == name.lower():  # a self-reference: embplan[dicom-codecs]
                todo.extend(e.strip() for e in (m.group(2) or "[]")[1:-1].split(",") if e.strip())
            else:
                reqs.append(r)
    pins: dict[str, str] = {}
    for r in reqs:
        m = _REQ.match(r.split(";")[0])
        if m is None:
            raise SystemExit(f"cannot parse requirement {r!r}")
        spec = m.group(3)
        low = re.search(r">=\s*([0-9][^,\s]*)", spec)
        if low is None:
            raise SystemExit(f"requirement {r!r} has no lower bound (>=)")
        pins[m.group(1)] = low.group(1)
    return pins


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    for pkg, version in sorted(lower_bounds(root / "pyproject.toml").items(), key=lambda kv: kv[0].lower()):
        print(f"{pkg}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
