"""docs/ holds reports (issue 22): each at most 120 lines, every docs/ path the README names exists, and every report
is reachable from the README (directly or through the docs/BENCHMARKS.md index). History lives in docs/appendix/,
which has no length limit."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MAX_REPORT_LINES = 120

# A docs/ path as the README writes it: in backticks, in a Markdown link or bare in the text.
DOC_PATH = re.compile(r"docs/[A-Za-z0-9_./{},-]*[A-Za-z0-9_/]")


def reports() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def doc_paths(text: str) -> set[str]:
    return set(DOC_PATH.findall(text))


def test_there_are_reports():
    names = {p.name for p in reports()}
    assert {"TABLE1.md", "TABLE2.md", "MRLM.md", "BENCHMARKS.md"} <= names


def test_every_report_is_at_most_120_lines():
    too_long = {p.name: n for p in reports() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_REPORT_LINES}
    assert not too_long, f"reports over {MAX_REPORT_LINES} lines (move history to docs/appendix/): {too_long}"


def test_every_docs_path_the_readme_names_exists():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    paths = doc_paths(readme)
    assert "docs/TABLE2.md" in paths and "docs/BENCHMARKS.md" in paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"README names docs/ paths that do not exist: {missing}"


def test_every_report_is_linked_from_the_readme_or_the_benchmarks_index():
    readme = doc_paths((ROOT / "README.md").read_text(encoding="utf-8"))
    index = (DOCS / "BENCHMARKS.md").read_text(encoding="utf-8")
    linked_in_index = {f"docs/{m}" for m in re.findall(r"\]\(([A-Za-z0-9_]+\.md)\)", index)}
    unlinked = [p.name for p in reports() if f"docs/{p.name}" not in readme | linked_in_index]
    assert not unlinked, f"reports neither the README nor docs/BENCHMARKS.md links: {unlinked}"


def test_links_between_reports_resolve():
    broken = []
    for report in [*reports(), *sorted((DOCS / "appendix").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)\)", report.read_text(encoding="utf-8")):
            if "://" not in target and not (report.parent / target).exists():
                broken.append(f"{report.relative_to(ROOT)} -> {target}")
    assert not broken, f"broken relative links: {broken}"


def test_the_path_pattern_finds_what_the_readme_writes():
    text = "see `docs/MRLM.md`, [a](docs/screenshots/a.png) and docs/BENCHMARKS.md. Also docs/appendix/X_history.md)"
    assert doc_paths(text) == {
        "docs/MRLM.md",
        "docs/screenshots/a.png",
        "docs/BENCHMARKS.md",
        "docs/appendix/X_history.md",
    }
