"""The README's install section says what scripts/install.sh does: the extras and Debian packages it installs."""

from __future__ import annotations

import re
import subprocess
import tomllib

from tests.support.install import BASH, REPO, SCRIPT

README = (REPO / "README.md").read_text(encoding="utf-8")
INSTALL = README[README.index("## Install on a Raspberry Pi"):README.index("### Operating it")]


def script_array(name: str) -> list[str]:
    """A bash array of scripts/install.sh, as bash itself expands it (the script's assignments only)."""
    text = SCRIPT.read_text()
    assignments = "\n".join(line for line in text.splitlines() if re.match(r"^APT_\w+=|^EXTRAS=", line))
    out = subprocess.run([BASH, "-c", f'{assignments}\nprintf "%s\\n" "${{{name}[@]}}"'],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return out.split()


def test_the_pip_line_names_the_extras_the_installer_installs() -> None:
    """The installer installs each extra of its EXTRAS list that pyproject.toml declares; the README's pip
    line names exactly those, and each with a word on what it is."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = [e for e in script_array("EXTRAS") if e in declared]
    assert f"`pip install '.[{','.join(installed)}]'`" in INSTALL
    for extra in installed:
        assert f"`{extra}` the " in INSTALL, extra


def test_the_debian_packages_row_names_what_apt_installs() -> None:
    build, runtime = script_array("APT_BUILD_PACKAGES"), script_array("APT_RUNTIME_PACKAGES")
    row = next(line for line in INSTALL.splitlines() if line.startswith("| Debian packages"))
    assert f"`{' '.join(build)}`" in row
    assert all(f"`{p}`" in row for p in runtime), row
