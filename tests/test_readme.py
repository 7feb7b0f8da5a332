"""README.md tells the truth about what it can check mechanically."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_settings_table_matches_the_settings_classes() -> None:
    from tools.settings_doc import block

    assert block() in README, "README settings table is stale: run python tools/settings_doc.py --write"


def test_every_make_target_named_in_the_readme_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    named = set(re.findall(r"`make ([a-z-]+)", README))
    assert named and named <= targets, named - targets


def test_every_cli_command_in_the_readme_exists() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "maas.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    blocks = "\n".join(re.findall(r"```(?:sh)?\n(.*?)```", README, re.S))
    commands = set(re.findall(r"^maas ([a-z]+)", blocks, re.M))
    assert commands, "no maas commands found in README"
    missing = [c for c in commands if re.search(rf"\b{c}\b", help_text) is None]
    assert missing == []


def test_linked_files_exist() -> None:
    for link in re.findall(r"\]\(([^)#:]+)\)", README):
        assert (ROOT / link).exists(), link


def test_the_settings_table_says_how_long_a_token_must_be() -> None:
    from maas.common.auth import MIN_TOKEN_CHARS
    from tools.settings_doc import block

    rows = [line for line in block().splitlines() if "AUTH_TOKENS`" in line]
    assert rows and all(f"{MIN_TOKEN_CHARS} characters" in row for row in rows), rows
