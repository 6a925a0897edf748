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
