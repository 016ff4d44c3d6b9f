"""`doctor --write` edits the TOML text: only the device keys change; comments, order, quoting and every other key
stay as the user wrote them (a golden file), and the file is replaced atomically with its mode kept."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from vatel_edge.config import config_from_dict
from vatel_edge.doctor.command import Chosen, device_changes, write_devices
from vatel_edge.doctor.tomledit import set_keys, unified_diff, write_atomically
from vatel_edge.errors import ConfigError

DATA = Path(__file__).parent / "data"
DEVICE = "plughw:CARD=Speakerphone,DEV=0"


def test_golden_commented_config_changes_only_the_device_keys(tmp_path: Path) -> None:
    """The commented config becomes exactly the expected file: two values replaced in place (trailing comments
    kept, quoting normalised on the changed lines only), the missing capture_channel added after [audio]'s last key."""
    path = tmp_path / "config.toml"
    path.write_bytes((DATA / "commented.toml").read_bytes())
    old, new = write_devices(path, {"capture_device": DEVICE, "playback_device": DEVICE, "capture_channel": 1})
    assert new == (DATA / "commented.expected.toml").read_text()
    assert old == (DATA / "commented.toml").read_text()
    diff = unified_diff(old, new, str(path))
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == [
        '-capture_device = "default"   # set by hand, 2026-11-02',
        f'+capture_device = "{DEVICE}"   # set by hand, 2026-11-02',
        "-playback_device = 'plughw:CARD=Headphones,DEV=0' # jack",
        f'+playback_device = "{DEVICE}" # jack',
        "+capture_channel = 1",
    ]


def test_device_changes_lists_only_what_differs_from_the_config() -> None:
    cfg = config_from_dict({"vatel": {"agent_id": "5b0c5f57-1f9a-4d41-9d2c-8c3a1a6f0b11"},
                            "audio": {"capture_device": "a", "playback_device": "b"}})
    assert device_changes(cfg, Chosen("a", None, "b")) == {}
    assert device_changes(cfg, Chosen("c", 1, None)) == {"capture_device": "c", "capture_channel": 1}


def test_missing_table_is_appended_and_other_tables_untouched() -> None:
    text = "# top\n[vatel]\nagent_id = \"x\" # keep\n"
    new = set_keys(text, "audio", {"capture_device": 'odd "name"\\x'})
    assert new == text + '\n[audio]\ncapture_device = "odd \\"name\\"\\\\x"\n'
    assert tomllib.loads(new)["audio"]["capture_device"] == 'odd "name"\\x'


def test_key_added_before_the_comments_that_introduce_the_next_table() -> None:
    text = "[audio] # devices\nframe_ms = 20 # c\n\n# next\n[wake]\nmode = \"vad\"\n"
    assert set_keys(text, "audio", {"playback_device": "b"}) == (
        "[audio] # devices\nframe_ms = 20 # c\nplayback_device = \"b\"\n\n# next\n[wake]\nmode = \"vad\"\n")


@pytest.mark.parametrize("text", [
    'audio.capture_device = "x"\n',
    'audio = { capture_device = "x" }\n',
    '[audio]\ncapture_device = """x\n"""\n',
    "[audio\n",
])
def test_forms_it_does_not_edit_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="cannot edit"):
        set_keys(text, "audio", {"capture_device": "y"})


def test_a_key_of_another_table_with_the_same_name_is_not_touched() -> None:
    text = '[audio]\nframe_ms = 20\n[other]\ncapture_device = "keep"\n'
    new = set_keys(text, "audio", {"capture_device": "new"})
    assert tomllib.loads(new) == {"audio": {"frame_ms": 20, "capture_device": "new"},
                                  "other": {"capture_device": "keep"}}


def test_write_is_atomic_and_keeps_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[audio]\ncapture_device = \"a\"\n")
    os.chmod(path, 0o640)
    inode = path.stat().st_ino
    write_atomically(path, "[audio]\ncapture_device = \"b\"\n")
    assert path.read_text() == "[audio]\ncapture_device = \"b\"\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]  # no temporary left behind


def _offer(tmp_path: Path, *, write: bool, interactive: bool, answer: str) -> tuple[str, str, list[str]]:
    import io

    from vatel_edge.config import load_config
    from vatel_edge.doctor.command import DoctorOptions, offer_write
    from vatel_edge.doctor.report import Report

    path = tmp_path / "config.toml"
    path.write_bytes((DATA / "commented.toml").read_bytes())
    asked: list[str] = []

    def ask(question: str) -> str:
        asked.append(question)
        return answer

    out = io.StringIO()
    offer_write(Report(out), DoctorOptions(str(path), write=write, interactive=interactive), load_config(str(path)),
                Chosen(DEVICE, None, None), ask)
    return out.getvalue(), path.read_text(), asked


def test_interactive_write_shows_the_diff_and_asks_first(tmp_path: Path) -> None:
    original = (DATA / "commented.toml").read_text()
    out, text, asked = _offer(tmp_path, write=True, interactive=True, answer="n")
    assert f'+capture_device = "{DEVICE}"   # set by hand, 2026-11-02' in out
    assert len(asked) == 1 and "Write these changes" in asked[0]
    assert text == original and "not written" in out
    out, text, _ = _offer(tmp_path, write=True, interactive=True, answer="y")
    assert text == original.replace('capture_device = "default"', f'capture_device = "{DEVICE}"')
    assert "pass  write" in out


def test_without_write_it_only_says_what_differs(tmp_path: Path) -> None:
    out, text, asked = _offer(tmp_path, write=False, interactive=True, answer="y")
    assert text == (DATA / "commented.toml").read_text() and asked == []
    assert "doctor --write" in out and "---" not in out
