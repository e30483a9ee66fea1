"""`flts keys create`: a key for its holder, and a keys-file entry that holds only its hash."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from flts.auth import KeyRing, KeysFile
from flts.cli import app


def test_a_created_key_authenticates_as_the_printed_principal() -> None:
    result = CliRunner().invoke(app, ["keys", "create", "team-a", "--identifier", "cell-a*", "--identifier", "x"])
    assert result.exit_code == 0, result.output
    key = result.stderr.strip().rsplit(" ", 1)[-1]
    entry = KeysFile.model_validate(yaml.safe_load(result.stdout))
    assert key not in result.stdout
    principal = KeyRing(entry.principals).principal(key)
    assert principal is not None and principal.name == "team-a" and not principal.admin
    assert principal.may_use("cell-a7") and principal.may_use("x") and not principal.may_use("cell-b")


def test_a_key_without_scope_is_refused() -> None:
    result = CliRunner().invoke(app, ["keys", "create", "nobody"])
    assert result.exit_code == 2 and "--identifier" in result.output
