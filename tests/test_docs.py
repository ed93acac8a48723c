"""Every relative link in the project's Markdown files points at a file that exists.

The files checked: ``README.md``, ``docs/*.md``, ``weights/*.md`` and every other ``*.md`` that git
tracks (outside ``.venv`` and ``build``). A link is ``[text](target)``, ``[text](target#anchor)``
or a reference definition ``[label]: target``; the target, less its anchor, must name a file or
folder relative to the linking file. Links with a scheme (``https:``, ``mailto:``) and bare
anchors (``#section``) are not files and are skipped, as is everything inside code (fenced blocks
and inline spans), which is text, not links. Nothing is fetched.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

from child_env import REPO

SKIPPED_FOLDERS = {".venv", "build"}
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+[\"'(][^)]*)?\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def markdown_files(root: Path) -> list[Path]:
    """The Markdown files to check under ``root``: the fixed set plus what git tracks."""
    found = {root / "README.md", *root.glob("docs/*.md"), *root.glob("weights/*.md")}
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--", "*.md"],
                            capture_output=True, text=True)
    if listed.returncode == 0:
        found |= {root / name for name in listed.stdout.split("\0") if name}
    return sorted(p for p in found if p.is_file() and not SKIPPED_FOLDERS & set(p.relative_to(root).parts))


def link_targets(text: str) -> list[tuple[int, str]]:
    """(line, target) of every link in Markdown ``text``, code left out (its lines kept for numbering)."""
    blank = lambda m: re.sub(r"[^\n]", " ", m.group(0))  # noqa: E731
    text = INLINE_CODE.sub(blank, FENCE.sub(blank, text))
    found = [(m.start(), m.group(1)) for m in INLINE_LINK.finditer(text)]
    found += [(m.start(), m.group(1)) for m in REFERENCE.finditer(text)]
    return sorted((text.count("\n", 0, at) + 1, target.strip("<>")) for at, target in found)


def broken_links(root: Path) -> list[str]:
    """``file:line: target`` of each relative link under ``root`` whose file does not exist."""
    broken = []
    for path in markdown_files(root):
        for line, target in link_targets(path.read_text(encoding="utf-8")):
            if not target or target.startswith("#") or SCHEME.match(target):
                continue
            file_part = unquote(target.split("#", 1)[0].split("?", 1)[0])
            resolved = (root / file_part.lstrip("/")) if file_part.startswith("/") else (path.parent / file_part)
            if not resolved.exists():
                broken.append(f"{path.relative_to(root)}:{line}: {target}")
    return broken


def test_every_relative_link_in_the_markdown_files_resolves():
    files = markdown_files(REPO)
    assert REPO / "README.md" in files
    assert broken_links(REPO) == []


def test_the_manual_links_the_other_documents():
    linked = {target.split("#")[0] for _, target in link_targets((REPO / "README.md").read_text(encoding="utf-8"))}
    for name in ("weights/MODEL_CARD.md", "docs/experiments.md", "docs/reliability.md", "docs/benchmarks.md"):
        assert name in linked, name


# -- the checker itself, on a synthetic tree -------------------------------------------------------
def test_the_checker_finds_a_broken_link_and_skips_urls_anchors_and_code(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "MODEL_CARD.md").write_text("[manual](../README.md#quick-start)\n")
    (tmp_path / "docs" / "a.md").write_text(
        "# A\n\n[card](../weights/MODEL_CARD.md) [self](a.md#a) [up](..) [site](https://example.org/x.md)\n"
        "[here](#a) `[not](a link.md)`\n\n```\n[not](either.md)\n```\n"
        "[gone](missing.md#part) ![img](pic.png \"a title\")\n[ref]: ../nowhere.md\n")
    (tmp_path / "README.md").write_text("[docs](docs/a.md) [spaced](<docs/a.md>) [pct](docs%2Fa.md)\n")
    assert broken_links(tmp_path) == ["docs/a.md:9: missing.md#part", "docs/a.md:9: pic.png",
                                      "docs/a.md:10: ../nowhere.md"]
