"""Every relative link in the docs points at a file that exists, and at a heading that exists in it.

Docs move (a section to the research log, a module to another folder) and a link left behind fails only the reader;
this finds it in the fast tier. Anchors are made as GitHub makes them from a heading: lower case, punctuation but
hyphens and underscores dropped, spaces turned to hyphens, a repeated heading numbered.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md"), *(ROOT / "load_tests").glob("*.md")])

FENCED_CODE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def prose(path: Path) -> str:
    """The file without its code blocks: a `#` comment or a `](...)` in code is neither a heading nor a link."""
    return FENCED_CODE.sub("", path.read_text(encoding="utf-8"))


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in HEADING.findall(prose(path)):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(path)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not this repository's
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no such heading")
    return broken


def test_the_docs_are_found() -> None:
    assert {"README.md", "BENCHMARKS.md"} <= {path.name for path in DOCS}
    assert ROOT / "docs" / "operating.md" in DOCS


@pytest.mark.parametrize("path", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# A heading: with `code`\n\n## A heading: with `code`\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-heading-with-code) [second](other.md#a-heading-with-code-1) [self](#title)\n"
                    "# Title\n[gone](missing.md) [no anchor](other.md#nowhere) [web](https://example.com/x.md)\n"
                    "```\n[in code](missing-too.md)\n```\n", encoding="utf-8")
    assert broken_links(page) == ["missing.md: no such file", "other.md#nowhere: no such heading"]
