"""The README and docs/ tell the truth about what they name: every link, repository path, `flts` command and
`make` target they show exists (a renamed file or command fails here, not in a newcomer's shell)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command

from flts.cli import app

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "locust" / "README.md"]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
REPO_PATH = re.compile(
    r"`((?:src|tests|docs|benchmarks|deploy|config|scripts|locust|\.helm)/[\w./-]+?)(?:::[\w\[\]-]+)?`"
)
# `flts` the command, not the namespace in `kubectl -n flts ...`
FLTS_COMMAND = re.compile(r"(?<!-n )\bflts ([a-z][a-z-]+)(?: ([a-z][a-z-]+))?")
# Named on purpose as what is not a command (docs/deploy.md: the test cluster is test support, not `flts cluster`).
NOT_COMMANDS = {"flts cluster"}
MAKE_TARGET = re.compile(r"\bmake ([a-z][a-z-]+)")


def _ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(REPO)) for path in paths]


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_every_relative_link_and_repository_path_a_doc_shows_exists(doc: Path) -> None:
    text = doc.read_text()
    links = [target for target in LINK.findall(text) if "://" not in target and not target.startswith("mailto:")]
    missing = [target for target in links if not (doc.parent / target).exists()]
    missing += [path for path in REPO_PATH.findall(text) if "*" not in path and not (REPO / path).exists()]
    assert missing == [], f"{doc.name} names what does not exist"


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_every_flts_command_and_make_target_a_doc_shows_exists(doc: Path) -> None:
    text = doc.read_text()
    cli = get_command(app)
    unknown = []
    for command, sub in FLTS_COMMAND.findall(text):
        found = cli.commands.get(command) if hasattr(cli, "commands") else None
        if found is None and f"flts {command}" not in NOT_COMMANDS:
            unknown.append(f"flts {command}")
        elif sub and hasattr(found, "commands") and sub not in found.commands:
            unknown.append(f"flts {command} {sub}")
    targets = set(re.findall(r"^([a-z][a-z-]+):", (REPO / "Makefile").read_text(), re.M))
    unknown += [f"make {target}" for target in MAKE_TARGET.findall(text) if target not in targets]
    assert unknown == [], f"{doc.name} shows commands that do not exist"
