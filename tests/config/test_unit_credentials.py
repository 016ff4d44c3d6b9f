"""check-config outside the unit: the installed unit (and its drop-ins) say which config runs and which files
become its credentials; check-config reads the key from there only for that config."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

from vatel_edge.cli import check_config_command
from vatel_edge.config.check import EXAMPLE_AGENT_ID
from vatel_edge.config.unit import read_installed_unit

REPO = Path(__file__).resolve().parents[2]
AGENT = "0f6b1d52-8a3e-4c7d-9b21-5e4f3a2c1d0b"
SECRET = "sk-test-unitcred-0123456789abcdef"


def install_unit(root: Path, unit: str, **dropins: str) -> Path:
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "vatel-edge.service").write_text(unit)
    if dropins:
        (unit_dir / "vatel-edge.service.d").mkdir()
        for name, text in dropins.items():
            (unit_dir / "vatel-edge.service.d" / f"{name}.conf").write_text(text)
    return unit_dir


def write_config(root: Path, agent: str = AGENT) -> Path:
    path = root / "etc/vatel-edge/config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[vatel]\nagent_id = "{agent}"\n')
    return path


def write_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SECRET + "\n")
    path.chmod(0o600)


def run(path: Path, root: Path, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check_config_command(str(path), out, err, environ=environ or {}, root=str(root))
    assert SECRET not in out.getvalue() + err.getvalue()
    return code, out.getvalue(), err.getvalue()


def test_the_shipped_unit_names_the_installed_config_and_key(tmp_path: Path) -> None:
    """systemd/vatel-edge.service as installed: ExecStart's --config and LoadCredential=org_api_key, under root."""
    install_unit(tmp_path, (REPO / "systemd/vatel-edge.service").read_text())
    unit = read_installed_unit(tmp_path)
    assert unit is not None
    assert unit.config == tmp_path / "etc/vatel-edge/config.toml"
    assert unit.credentials == {"org_api_key": tmp_path / "etc/vatel-edge/org_api_key"}


def test_dropins_add_reset_and_use_the_credstore(tmp_path: Path) -> None:
    """Drop-ins in name order; an empty LoadCredential= resets; a bare ID is looked up in the credstores;
    --config=PATH is understood; other sections are ignored."""
    (tmp_path / "run/credstore").mkdir(parents=True)
    (tmp_path / "run/credstore/mqtt_password").write_text("x")
    install_unit(
        tmp_path,
        "[Service]\nExecStart=/opt/v/bin/vatel-edge run --config /etc/a.toml\nLoadCredential=org_api_key:/etc/k\n",
        **{"10-reset": "[Service]\nLoadCredential=\nLoadCredential=org_api_key:/srv/key\n",
           "20-mqtt": "[Service]\nLoadCredential=mqtt_password\nExecStart=\n"
                      "ExecStart=/opt/v/bin/vatel-edge run --config=/etc/b.toml\n",
           "30-other": "[Unit]\nLoadCredential=org_api_key:/nowhere\n"},
    )
    unit = read_installed_unit(tmp_path)
    assert unit is not None
    assert unit.config == tmp_path / "etc/b.toml"
    assert unit.credentials == {"org_api_key": tmp_path / "srv/key",
                                "mqtt_password": tmp_path / "run/credstore/mqtt_password"}


def test_no_unit_is_none(tmp_path: Path) -> None:
    assert read_installed_unit(tmp_path) is None


def test_the_units_config_gets_the_units_key(tmp_path: Path) -> None:
    """The config the unit runs passes with the key file LoadCredential= names, no env var needed."""
    install_unit(tmp_path, (REPO / "systemd/vatel-edge.service").read_text())
    config = write_config(tmp_path)
    write_key(tmp_path / "etc/vatel-edge/org_api_key")
    code, out, err = run(config, tmp_path)
    assert (code, err) == (0, ""), err
    assert out.startswith(f"OK: {config}\n")


def test_another_config_does_not_get_the_units_key(tmp_path: Path) -> None:
    """A config the unit does not run is checked as before (env var), not with the service's key."""
    install_unit(tmp_path, (REPO / "systemd/vatel-edge.service").read_text())
    write_key(tmp_path / "etc/vatel-edge/org_api_key")
    other = tmp_path / "mine.toml"
    other.write_text(f'[vatel]\nagent_id = "{AGENT}"\n')
    code, _, err = run(other, tmp_path)
    assert code == 2
    assert "environment variable ORG_API_KEY is not set" in err


def test_inside_the_unit_the_credentials_directory_wins(tmp_path: Path) -> None:
    """With $CREDENTIALS_DIRECTORY set (inside the unit) the unit file is not consulted."""
    install_unit(tmp_path, (REPO / "systemd/vatel-edge.service").read_text())
    config = write_config(tmp_path)  # the unit's key file is absent: consulting it would fail
    creds = tmp_path / "creds"
    write_key(creds / "org_api_key")
    code, _, err = run(config, tmp_path, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert (code, err) == (0, "")


def test_placeholder_agent_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    """The example's agent id (in any case) passes with a warning line on stdout; another id has none."""
    for agent, warned in ((EXAMPLE_AGENT_ID, True), (EXAMPLE_AGENT_ID.upper(), True), (AGENT, False)):
        config = write_config(tmp_path, agent)
        out, err = io.StringIO(), io.StringIO()
        assert check_config_command(str(config), out, err, environ={"ORG_API_KEY": SECRET}) == 0
        assert err.getvalue() == ""
        warning = f"warning: vatel.agent_id is still the example's placeholder {EXAMPLE_AGENT_ID}"
        assert (warning in out.getvalue()) is warned, out.getvalue()


def test_placeholder_constant_is_the_example_files() -> None:
    """EXAMPLE_AGENT_ID is config/vatel-edge.toml's agent_id (they cannot drift apart)."""
    example = tomllib.loads((REPO / "config/vatel-edge.toml").read_text())
    assert example["vatel"]["agent_id"] == EXAMPLE_AGENT_ID
