"""README.md and docs/: CI runs the quick start's own lines, links resolve, the README stays a short guide."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README_TEST_COMMAND = "pip install -r requirements-dev.txt && python -m pytest -q"


def quick_start_commands() -> list[str]:
    """The command lines of the ```bash block under README.md's "## Quick start"."""
    section = (REPO / "README.md").read_text().split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block, "the quick start lost its bash block"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_ci_runs_exactly_the_readme_install_and_test_lines() -> None:
    readme = [line for line in quick_start_commands() if line.startswith("pip ")]
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    ci = [line for line in ci_lines if line.startswith(("pip ", "python -m pip", "python -m pytest"))]
    assert readme == ci, "make .ci/run run the README quick start's pip lines, in order, and nothing else"
    assert readme[0] == "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
    assert readme[-1] == README_TEST_COMMAND


def test_readme_and_docs_links_point_to_files_in_the_repository() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    missing = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            path = target.split("#", 1)[0]
            if path and not re.match(r"[a-z]+://", path) and not (page.parent / path).exists():
                missing.append(f"{page.relative_to(REPO)} -> {target}")
    assert not missing, missing


def test_readme_is_a_short_guide() -> None:
    """Reference material lives in docs/; the README says what it is and how to run it."""
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


def test_the_quick_starts_first_check_names_test_files_that_exist() -> None:
    """The quick start's first check (a comment line of its bash block) runs real test files."""
    section = (REPO / "README.md").read_text().split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    check = re.search(r"#\s+(python -m pytest -q (tests/\S+\.py ?)+)\n", section)
    assert check, "the quick start lost its first-check command"
    files = check.group(1).split()[4:]
    assert files and all((REPO / f).is_file() for f in files), files
