"""Docs stay true: every flag of both binaries is in docs/configuration.md."""

import re
import subprocess

import pytest

from conftest import BIN_DIR, ROOT


@pytest.mark.parametrize("binary", ["control-plane", "data-plane"])
def test_every_flag_is_documented(binary):
    help_text = subprocess.run([str(BIN_DIR / binary), "--help"], capture_output=True, text=True, check=True).stdout
    flags = set(re.findall(r"--([a-z0-9-]+)", help_text)) - {"help", "version"}
    assert len(flags) > 10
    docs = (ROOT / "docs" / "configuration.md").read_text()
    section = docs.split(f"## {binary}")[1].split("\n## ")[0]
    documented = set(re.findall(r"`--([a-z0-9-]+)`", section))
    assert flags - documented == set(), f"{binary} flags missing from docs/configuration.md"
    assert documented - flags == set(), f"docs/configuration.md names {binary} flags that do not exist"


def test_every_cli_flag_is_documented():
    """docs/admin.md names every flag of every `switchboard` command."""
    cli = str(BIN_DIR / "switchboard")
    top = subprocess.run([cli, "--help"], capture_output=True, text=True, check=True).stdout
    commands = re.findall(r"^  ([a-z]+)  ", top.split("Commands:")[1].split("Options:")[0], re.M)
    assert {"login", "apply", "diff", "export", "usage", "keys"} <= set(commands)
    helps = [top] + [subprocess.run([cli, c, "--help"], capture_output=True, text=True, check=True).stdout
                     for c in commands if c != "help"]
    helps += [subprocess.run([cli, *c, "--help"], capture_output=True, text=True, check=True).stdout
              for c in (("keys", "create"), ("keys", "rotate"), ("keys", "revoke"), ("cache", "purge"))]
    flags = {f for text in helps for f in re.findall(r"--([a-z0-9-]+)", text)} - {"help", "version"}
    docs = (ROOT / "docs" / "admin.md").read_text()
    documented = set(re.findall(r"--([a-z0-9-]+)", docs))
    assert flags - documented == set(), "switchboard flags missing from docs/admin.md"
