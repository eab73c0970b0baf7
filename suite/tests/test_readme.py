"""The documentation a newcomer reads: a README short enough to read (the rest in docs/), with the two
commands near the top, links that lead somewhere, and `--help` texts that point at pages that exist.

A moved section breaks links silently (GitHub renders a dead anchor as a plain jump to the top), so
every relative link of README.md and docs/*.md is resolved here, anchors included for the hand-written
pages. Generated files (results/report/report.md) are only checked to exist: their headings are the
report generator's, and the published report is rebuilt from the store, not edited.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from suite import cli

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
INSTALL_AND_RUN = 'python -m pip install -e ".[all]" -c constraints/lock-cpu.txt && python -m suite run'
INSTALL_AND_TEST = ('python -m pip install -e ".[all,test,gpu-kernels,zoo]" -c constraints/lock-cpu.txt'
                    " && python -m pytest")
MAX_README_LINES = 300
SHARED = "../" + "shared"  # spelled apart so that this file does not cite it


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans: a link in code is not a link."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _links(page: Path) -> list[str]:
    """Relative link targets of a Markdown page (inline links and images; URLs and mail left out)."""
    targets = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", _prose(page.read_text()))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.I)]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"`|\*\*|\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    """Every heading's anchor, with GitHub's -1, -2 ... suffixes for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for line in _prose_keep_headings(page.read_text()):
        slug = _slug(line)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _prose_keep_headings(text: str) -> list[str]:
    """The ATX headings of a page outside fenced code blocks, without their leading #s."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.M | re.S)
    return [m.group(1) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M)]


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; move detail to docs/ (at most {MAX_README_LINES})"


def test_the_two_commands_are_in_the_first_60_lines():
    head = "\n".join(README.read_text().splitlines()[:60])
    assert INSTALL_AND_RUN in head and INSTALL_AND_TEST in head


def test_the_readme_links_every_docs_page():
    """A page no one links to is a page no one finds: each docs/*.md is linked from the README."""
    linked = {(README.parent / t.split("#")[0]).resolve() for t in _links(README) if t.split("#")[0]}
    assert [p.name for p in DOCS if p.resolve() not in linked] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page.resolve()
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and dest in {p.resolve() for p in PAGES}:
            if anchor not in _anchors(dest):
                broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert broken == [], f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_no_project_file_cites_files_users_do_not_have():
    """The checkout is all a user has: no page, module or config cites the workspace's shared folder."""
    kinds = {".md", ".py", ".toml", ".txt", ".in", ".cfg", ".yml", ".yaml", ""}
    skip = {"results", ".git", ".nox", ".venvs", "shared"}
    citing = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
              if p.is_file() and p.suffix in kinds and not skip & set(p.relative_to(ROOT).parts)
              and ".egg-info" not in str(p) and SHARED in p.read_text(errors="replace")]
    assert citing == []


def _helps() -> dict[str, str]:
    """`python -m suite --help` and every command's --help, as argparse formats them."""
    parser = cli._parser()
    sub = next(a for a in parser._actions if a.choices and "run" in a.choices)
    return {"": parser.format_help(), **{name: p.format_help() for name, p in sub.choices.items()}}


def test_help_names_every_command_and_cites_pages_that_exist():
    helps = _helps()
    top = helps[""]
    assert all(name in top for name in helps if name), top
    for name, text in helps.items():
        flat = " ".join(text.split())
        assert "README:" not in flat, f"`{name} --help` cites a README section; cite docs/<page>.md"
        missing = [d for d in re.findall(r"docs/[\w.-]+\.md", flat) if not (ROOT / d).exists()]
        assert missing == [], f"`{name} --help` cites {missing}"


def test_bench_help_states_the_defaults_bench_uses():
    from suite.bench import BENCH_DEFAULTS

    text = " ".join(_helps()["bench"].split())
    assert [k for k, v in BENCH_DEFAULTS.items() if f"(default: {','.join(v)}" not in text] == []


@pytest.mark.parametrize("argv", [["run", "--backend", "numpy"], ["bench", "--size", "8x16"],
                                  ["compare", "a", "b", "--stat", "min"], ["report", "--run", "x"],
                                  ["ab", "--a", "python", "--b", "python", "--backends", "jax", "--run", "3"],
                                  ["import-benchmark", "x.json", "--run", "x"]])
def test_every_command_refuses_abbreviated_options(argv, capsys):
    """argparse would take --backend for --backends; a typo must not pass silently in any command."""
    with pytest.raises(SystemExit) as e:
        cli._parser().parse_args(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "unrecognized arguments" in err and err.count("\n") == 1, err
