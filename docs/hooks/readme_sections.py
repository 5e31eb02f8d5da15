"""mkdocs hook: pages include sections of the README (and whole files such as the CHANGELOG), so each text
exists once.

A line ``<!-- readme: The case file -->`` in a page is replaced by the README section with that ``## `` heading
(without the heading itself). A missing section fails the build (strict docs never go stale silently).
"""

from __future__ import annotations

import re
from pathlib import Path

_MARKER = re.compile(r"^<!-- readme: (.+?) -->$", re.MULTILINE)
_INCLUDE = re.compile(r"^<!-- include: (.+?) -->$", re.MULTILINE)


def _sections(readme: str) -> dict[str, str]:
    out: dict[str, str] = {}
    parts = re.split(r"^## (.+)$", readme, flags=re.MULTILINE)
    for title, body in zip(parts[1::2], parts[2::2], strict=True):
        out[title.strip()] = body.strip("\n")
    return out


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 (mkdocs hook signature)
    root = Path(config["config_file_path"]).parent
    # ``<!-- include: CHANGELOG.md -->``: a whole file of the repository (its first heading dropped)
    markdown = _INCLUDE.sub(
        lambda m: re.sub(r"\A# .*\n", "", (root / m.group(1).strip()).read_text(encoding="utf-8")), markdown
    )
    if "<!-- readme:" not in markdown:
        return markdown
    readme = (root / "README.md").read_text(encoding="utf-8")
    sections = _sections(readme)

    def sub(m: re.Match[str]) -> str:
        title = m.group(1).strip()
        if title not in sections:
            raise KeyError(f"{page.file.src_path}: README has no section '## {title}' (known: {sorted(sections)})")
        # README links point at docs/...; inside the site the pages sit side by side
        return sections[title].replace("](docs/", "](")

    return _MARKER.sub(sub, markdown)
