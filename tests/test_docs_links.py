"""Every relative link and anchor in the documentation resolves, as GitHub renders them."""
import re
from pathlib import Path
from typing import Dict, List, Set

from helpers import REPO

#: the pages a reader follows links through (the generated config-folder READMEs included)
PAGES = sorted({*REPO.glob("*.md"), *(REPO / "docs").glob("*.md"), REPO / "tools" / "README.md",
                *(REPO / "configs").rglob("README.md")})
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def _prose(text: str) -> List[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (not ``-`` / ``_``), spaces as ``-``."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> Set[str]:
    found: Dict[str, int] = {}
    for line in _prose(path.read_text()):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = _slug(match.group(1))
            found[slug] = found.get(slug, -1) + 1
    names = set()
    for slug, repeats in found.items():  # GitHub numbers repeated headings: slug, slug-1, slug-2, ...
        names.add(slug)
        names.update(f"{slug}-{i}" for i in range(1, repeats + 1))
    return names | {name for line in _prose(path.read_text()) for name in re.findall(r'<a (?:name|id)="([^"]+)"', line)}


def test_the_slug_rule_matches_githubs():
    assert _slug("Published backbones by name (`ssn://`)") == "published-backbones-by-name-ssn"
    assert _slug("Licence, changes, citing") == "licence-changes-citing"
    assert _slug("`tools/deploy.py`") == "toolsdeploypy"


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        for line in _prose(page.read_text()):
            for match in LINK.finditer(re.sub(r"`[^`]*`", "", line)):
                target = match.group(1) or match.group(2)
                if re.match(r"[a-z]+:", target):  # https:, mailto:, ssn: ... are not files
                    continue
                file_part, _, anchor = target.partition("#")
                resolved = (page.parent / file_part).resolve() if file_part else page
                where = f"{page.relative_to(REPO)}: ({target})"
                if not resolved.exists():
                    broken.append(f"{where}: no such file")
                elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                    broken.append(f"{where}: no heading with that anchor")
    assert not broken, "\n".join(broken)


def test_no_page_repeats_its_title_as_its_first_section():
    repeated = []
    for page in PAGES:
        headings = [line for line in _prose(page.read_text()) if re.match(r"#{1,2}\s", line)]
        if len(headings) > 1 and headings[0].startswith("# ") and headings[1].startswith("## ") \
                and _slug(headings[0][2:]) == _slug(headings[1][3:]):
            repeated.append(str(page.relative_to(REPO)))
    assert not repeated, repeated
