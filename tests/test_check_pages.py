"""scripts/check_pages.py on tiny hand-made pages: it finds the one overflow, and nothing else."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_pages.py"

needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="chromium not installed (apt-get install chromium)"
)

# The content column the script measures against: sphinx-book-theme's article.bd-article,
# 500 px wide here, without padding.
PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><style>
  body {{ margin: 0; font: 16px sans-serif; }}
  article.bd-article {{ width: 500px; margin-left: 200px; padding: 0; }}
  table, td {{ border: 1px solid #888; border-collapse: collapse; }}
</style></head>
<body><article class="bd-article"><section id="data">
<h1>{title}</h1>
<p>A paragraph of ordinary text that wraps inside the column, as text does.</p>
{body}
</section></article></body></html>
"""
WIDE_TABLE = '<table style="width: 800px"><tr><td>age</td><td>sex</td><td>bmi</td></tr></table>'
SMALL_TABLE = '<table style="width: 400px"><tr><td>age</td><td>sex</td><td>bmi</td></tr></table>'
SCROLLED_CODE = (
    '<div style="overflow-x: auto"><pre style="margin: 0">'
    + "x = "
    + " + ".join(str(i) for i in range(60))
    + "</pre></div>"
)


def write_page(html: Path, rel: str, title: str, body: str) -> None:
    path = html / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PAGE.format(title=title, body=body))


def run_check(html: Path, out: Path, report: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("websocket")
    cmd = [sys.executable, str(SCRIPT), "--html", str(html), "--out", str(out)]
    cmd += ["--json", str(report), "--width", "1000", "--timeout", "20"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@needs_chromium
def test_finds_the_overflowing_table_and_nothing_else(tmp_path):
    html, out, report = tmp_path / "html", tmp_path / "shots", tmp_path / "report.json"
    write_page(html, "notebooks/wide.html", "Wide", WIDE_TABLE)
    write_page(html, "notebooks/fits.html", "Fits", SMALL_TABLE + "<pre>x = 1</pre>")
    # Not pages of the book: never opened, although they overflow too.
    write_page(html, "search.html", "Search", WIDE_TABLE)
    write_page(html, "_static/extra.html", "Static", WIDE_TABLE)
    (html / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=fits.html" />')

    proc = run_check(html, out, report)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads(report.read_text())
    assert sorted(result["pages"]) == ["notebooks/fits.html", "notebooks/wide.html"]
    [finding] = result["findings"]
    assert finding["page"] == "notebooks/wide.html"
    assert (finding["kind"], finding["mode"], finding["section"]) == ("table", "overflow", "data")
    assert abs(finding["px"] - 300) <= 2  # an 800 px table in a 500 px column
    assert "age | sex | bmi" in finding["snippet"]
    assert result["pages"]["notebooks/fits.html"]["findings"] == []
    assert "notebooks/wide.html#data: table sticks out of the content column by" in proc.stdout
    assert "1 finding(s)" in proc.stdout.splitlines()[-1]

    shots = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert shots == ["notebooks/fits.png", "notebooks/wide.png"]
    for shot in shots:
        width, height = png_size(out / shot)
        assert width == 1000 and height > 0


@needs_chromium
def test_a_scroll_box_that_hides_code_is_a_finding(tmp_path):
    html, out, report = tmp_path / "html", tmp_path / "shots", tmp_path / "report.json"
    write_page(html, "notebooks/scroll.html", "Scroll", SCROLLED_CODE)
    proc = run_check(html, out, report)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [finding] = json.loads(report.read_text())["findings"]
    assert (finding["kind"], finding["mode"]) == ("code", "scroll")
    assert finding["px"] > 100 and finding["snippet"].startswith("x = 0 + 1 + 2")


def test_without_chromium_it_says_how_to_install_it(tmp_path):
    (tmp_path / "index.html").write_text("<p>hi</p>")
    cmd = [sys.executable, str(SCRIPT), "--html", str(tmp_path), "--chromium", "/nonexistent"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "apt-get install chromium" in proc.stderr
