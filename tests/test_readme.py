"""The README cannot drift: its config reference is the generated one, its TOML examples load, its
commands exist, and CI calls its test command."""

from __future__ import annotations

import re
from pathlib import Path

from vatel_edge.cli import COMMANDS, build_parser
from vatel_edge.config import loads_config
from vatel_edge.devkit.config_doc import config_reference_markdown

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
AGENT = "3c90c3cc-0d44-4b50-8888-8dd25736052a"


def test_config_reference_is_the_generated_one() -> None:
    block = re.search(r"<!-- config-reference:start -->\n(.*?)<!-- config-reference:end -->", README, re.S)
    assert block is not None
    assert block.group(1).strip() == config_reference_markdown().strip()


def test_every_toml_example_in_the_readme_is_a_valid_config() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", README, re.S)
    assert blocks
    for block in blocks:
        text = block if "[vatel]" in block else f'[vatel]\nagent_id = "{AGENT}"\n' + block
        loads_config(text)  # raises ConfigError naming the key if the README is wrong


def test_every_command_in_the_commands_table_exists() -> None:
    table = README[README.index("## Commands") : README.index("## Events")]
    named = set(re.findall(r"`vatel-edge ([a-z-]+)", table))
    known = set(COMMANDS) | {"check-config"}
    assert named and named <= known
    assert known <= named, f"undocumented: {known - named}"
    build_parser()  # every subcommand parses


def test_the_two_commands_are_the_makefile_targets_and_ci_runs_the_test_one() -> None:
    assert "make demo" in README and "make test" in README
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_install_section_matches_docs_install() -> None:
    install = (ROOT / "docs" / "INSTALL.md").read_text(encoding="utf-8").strip()
    assert install in README
