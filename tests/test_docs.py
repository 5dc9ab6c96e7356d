"""The documentation stays true to the code: the CLI reference is what ``--help`` prints, the README
stays a front page, and no page speaks of the project's history instead of what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from saeembed.cli.reference import cli_reference

REPO = Path(__file__).resolve().parent.parent
# Words that date a text instead of describing the code: a work item's number, or a narration of a change.
# Written with \s+ so that this file describes the rule without matching it.
DATING = re.compile(r"\b(?:[Ii]ssues?|[Ss]tops?)\s+#?\d+|\bbefore\s+issue|\bsince\s+stop|\bland(?:ed)\b"
                    r"|\bbefore\s+this\s+change")


def test_cli_reference_page_is_what_the_commands_print():
    page = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert page == cli_reference(), "docs/cli.md is stale: run python -m saeembed.cli.reference --write docs/cli.md"


def test_readme_is_a_front_page_with_the_two_commands():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    assert "saeembed encode" in blocks[0] and "saeembed diff" in blocks[0]
    assert "pytest" in blocks[1]


def test_no_page_speaks_of_the_projects_history():
    files = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "saeembed").rglob("*.py"),
             *(REPO / "tests").glob("*.py"), *(REPO / "scripts").glob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    hits = [f"{f.relative_to(REPO)}:{i}: {line.strip()}" for f in files
            for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1) if DATING.search(line)]
    assert not hits, "\n".join(hits[:20])
