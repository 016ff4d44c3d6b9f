"""The report page in a real headless browser (Debian's chromium): the screenshot is not blank and shows the
three waveforms in their lanes and the event markers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.support.browser import colour_mask, read_png, screenshot
from vatel_edge.report import KIND_STYLE, TRACKS, write_report


def check_screenshot(page: Path, png: Path) -> None:
    """Screenshot `page`; assert it has content, each waveform colour in its own lane (mic above sent above
    played) and the wake and barge-in markers."""
    screenshot(page, png)
    image = read_png(png)
    assert image.shape[:2] == (900, 1400)
    non_white = np.any(image[..., :3] < 235, axis=-1)
    assert non_white.mean() > 0.05, f"the page looks blank ({non_white.mean():.1%} non-white pixels)"
    rows = []
    for key, (_, _, colour) in TRACKS.items():
        mask = colour_mask(image, colour, tolerance=8)
        assert mask.sum() > 1500, f"{key} waveform ({colour}) not visible: {mask.sum()} pixels"
        rows.append(float(np.median(np.nonzero(mask)[0])))
    assert rows == sorted(rows), f"lanes out of order (median rows {rows})"
    for kind in ("wake", "barge_in"):
        colour, _ = KIND_STYLE[kind]
        assert colour_mask(image, colour, tolerance=24).sum() > 50, f"no {kind} marker ({colour})"


@pytest.mark.timeout(120)
def test_the_report_of_a_recording_renders_in_headless_chromium(make_recording: Callable[..., Path],
                                                                 tmp_path: Path) -> None:
    page = write_report(make_recording())
    check_screenshot(page, tmp_path / "report.png")
