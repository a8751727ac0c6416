"""Open every page of the built book in headless Chromium: screenshots and horizontal overflow.

Run it on a built book (``make book``; ``EHRSEQ_PROFILE=smoke make book`` is the quick build):

    .venv/bin/python scripts/check_pages.py
    .venv/bin/python scripts/check_pages.py --pages 'notebooks/07*' --width 1100
    .venv/bin/python scripts/check_pages.py --html _build/html --out _build/screenshots --json report.json

It opens every HTML page of the book, which for a Jupyter Book are the pages of the table of
contents (``book/*``, ``notebooks/*``, ``index.html``): every ``*.html`` under ``--html`` except
Sphinx's own ``search.html``, ``genindex.html``, ``py-modindex.html``, the folders ``_static``,
``_sources``, ``_images``, and redirect stubs such as the root ``index.html``. ``--pages GLOB``
(repeatable) keeps those whose path matches. Each opens as a ``file://`` URL in a ``--width`` x ``--height`` window, waits
until the page has loaded, MathJax has typeset (when the page loads MathJax), the web fonts are
ready and the images have decoded, and then

* measures horizontal overflow against the content column: the right edge of the content box
  (inside the padding) of ``article.bd-article``, the article of a sphinx-book-theme page
  (fallbacks for other pages: ``.bd-article``, ``[role=main]``, ``main``, ``body``). Checked
  elements, by kind: ``math`` (display and inline MathJax containers, ``div.math``), ``table``,
  ``code`` (``pre``, ``div.highlight``), ``image`` (``img``, ``svg``, ``canvas``, ...),
  ``caption`` (``figcaption``, ``caption``, ``p.caption``) and, for anything else in the
  article (a long URL or inline literal), ``text``. An element's extent includes content that
  spills out of it (a wide equation overflows its block-level MathJax container). Findings,
  each more than ``--tolerance`` px (default 2):

  - ``overflow``: the element sticks out past the right edge of the column (over the margin
    and the page's table of contents);
  - ``scroll``: the element is cut at the edge of a horizontally scrollable box (its own
    ``overflow-x: auto``, or a wrapper's, such as myst-nb's ``div.cell_output .output``);
    the reader must scroll sideways to see all of the equation, table or code line;
  - ``clipped``: as ``scroll``, but the box has ``overflow: hidden``: that part cannot be seen.

  An element inside another finding is not reported again (one finding per wide table or code
  block, not per cell or token). Content that the theme deliberately puts into the right
  margin (``{margin}`` notes, sidebars, margin captions, ``full-width`` cells) is not checked,
  and neither is content that is hidden when the page opens (a collapsed ``hide-input`` cell).
* saves a full-page PNG screenshot to ``--out`` (default ``_build/screenshots``), mirroring
  the page's path (``notebooks/01_synthetic_cohort.html`` ->
  ``_build/screenshots/notebooks/01_synthetic_cohort.png``).

It prints a line per page (size, MathJax state, seconds), one line per finding (page#section,
kind, what happens and by how many px, the element's offset from the top of the page ``y=`` to
find it on the screenshot, and a snippet: the TeX of an equation, the header row of a table,
the longest line of a code block) and a summary; ``--json FILE`` writes all of it as JSON.
A short page takes about a second, a long chapter 3-5 s, most of it encoding the PNG
(``--no-screenshots`` measures only). Exit status: 0 when no page has a finding, 1 when some
do, 2 when the check could not run (no Chromium, no pages, a page that failed to load).

Chromium is driven through the DevTools protocol with ``websocket-client`` (in the venv); it
runs with a throw-away profile, every http(s) request blocked (the book's MathJax and fonts are
local files) and is killed at the end, also on error or Ctrl-C.

Chromium is the Debian/Ubuntu package ``chromium`` (binary ``chromium`` on PATH):

    sudo apt-get install chromium          # Debian; on Ubuntu the snap behind chromium-browser

or any Chrome/Chromium binary passed as ``--chromium PATH`` (``google-chrome``, or the
``chrome-headless-shell`` of ``npx @puppeteer/browsers install chrome-headless-shell``).
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Top-level Sphinx pages that are not chapters of the book.
SKIP_PAGES = {"search.html", "genindex.html", "py-modindex.html", "np-modindex.html"}
INSTALL_HINT = (
    "Install it with `sudo apt-get install chromium` (Debian/Ubuntu package `chromium`; "
    "on Ubuntu `chromium-browser` from snap also works) or pass --chromium PATH to a "
    "Chrome/Chromium binary."
)


class CheckError(Exception):
    """The check could not run (exit status 2)."""


@dataclass
class Finding:
    page: str
    kind: str  # math, table, code, image, caption, text, page
    mode: str  # overflow, scroll, clipped
    px: int
    snippet: str
    section: str
    y: int  # page offset of the element's top, in CSS px (find it on the screenshot)

    def line(self) -> str:
        where = f"{self.page}#{self.section}" if self.section else self.page
        what = {
            "overflow": f"sticks out of the content column by {self.px} px",
            "scroll": f"needs horizontal scrolling: {self.px} px hidden in a scroll box",
            "clipped": f"is cut off: {self.px} px hidden (overflow: hidden)",
        }[self.mode]
        return f'{where}: {self.kind} {what} (y={self.y}): "{self.snippet}"'


# --------------------------------------------------------------------------------------------
# Chromium and the DevTools protocol


def find_chromium(explicit: str | None) -> str:
    if explicit:
        path = shutil.which(explicit) or (explicit if os.access(explicit, os.X_OK) else None)
        if not path:
            raise CheckError(f"--chromium {explicit}: not an executable. {INSTALL_HINT}")
        return path
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise CheckError(f"chromium not found on PATH. {INSTALL_HINT}")


class DevTools:
    """A minimal DevTools-protocol client over one browser websocket (flattened sessions)."""

    def __init__(self, url: str, timeout: float):
        try:
            import websocket
        except ImportError as err:
            raise CheckError(
                "websocket-client is missing: run with the project's venv (.venv/bin/python), "
                "or pip install websocket-client"
            ) from err

        self._ws_mod = websocket
        self.ws = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        self.timeout = timeout
        self.next_id = 0

    def call(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        *,
        timeout: float | None = None,
    ) -> dict:
        self.next_id += 1
        msg_id = self.next_id
        msg: dict = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"{method}: no answer from Chromium in {timeout or self.timeout:.0f} s"
                )
            self.ws.settimeout(remaining)
            try:
                data = json.loads(self.ws.recv())
            except self._ws_mod.WebSocketTimeoutException:
                continue
            if data.get("id") == msg_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error'].get('message', data['error'])}")
                return data.get("result", {})
            if data.get("method") in ("Inspector.targetCrashed", "Target.targetCrashed"):
                raise RuntimeError("the page crashed in Chromium")

    def evaluate(self, expression: str, session: str, *, timeout: float | None = None):
        res = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session,
            timeout=timeout,
        )
        if "exceptionDetails" in res:
            details = res["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError(f"script error in the page: {text}")
        return res.get("result", {}).get("value")

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


def _become_subreaper() -> None:
    """Have Chromium's orphaned helpers re-parented to this process, not to init (Linux).

    Its zygote and crash handler outlive the browser process by a moment; as their subreaper
    this process can wait for them (or kill them) instead of leaving zombies behind.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        except Exception:
            pass


def _children() -> list[int]:
    """This process's children (Chromium and its helpers: the script starts nothing else)."""
    me, kids = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me:
            kids.append(int(stat.parent.name))
    return kids


def _reap_children(grace: float = 3.0) -> None:
    """Wait for the children left after Chromium closed; kill those still running after grace."""
    if not sys.platform.startswith("linux"):
        return
    deadline = time.monotonic() + grace
    killed = False
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # none left
        if pid:
            continue
        if time.monotonic() > deadline:
            if killed:
                return
            for kid in _children():
                try:
                    os.kill(kid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            killed, deadline = True, time.monotonic() + grace
        time.sleep(0.05)


class Chromium:
    """Headless Chromium with a throw-away profile; a context manager that always kills it."""

    def __init__(self, binary: str, width: int, height: int, timeout: float):
        self.binary, self.width, self.height, self.timeout = binary, width, height, timeout
        self.proc: subprocess.Popen | None = None
        self.tmp: str | None = None
        self.devtools: DevTools | None = None

    def __enter__(self) -> Chromium:
        _become_subreaper()
        self.tmp = tempfile.mkdtemp(prefix="check_pages-")
        log = open(os.path.join(self.tmp, "chromium.log"), "wb")  # noqa: SIM115
        args = [
            self.binary,
            "--headless=new",
            "--no-sandbox",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.tmp}",
            f"--window-size={self.width},{self.height}",
            "--allow-file-access-from-files",  # MathJax's and the theme's fonts from file://
            "--hide-scrollbars",  # lay out at exactly --width, as the screenshots
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--mute-audio",
            "--force-color-profile=srgb",
            "--disable-breakpad",
            "--disable-crash-reporter",
            "about:blank",
        ]
        try:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as a whole
            )
        finally:
            log.close()
        try:
            self.devtools = DevTools(self._browser_url(), self.timeout)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _browser_url(self) -> str:
        port_file = Path(self.tmp) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = Path(self.tmp, "chromium.log").read_text(errors="replace")[-2000:]
                raise CheckError(f"chromium exited with status {self.proc.returncode}:\n{log}")
            lines = port_file.read_text().split() if port_file.exists() else []
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            time.sleep(0.05)
        raise CheckError(f"chromium did not open its DevTools port in {self.timeout:.0f} s")

    def __exit__(self, *exc) -> None:
        if self.devtools is not None:
            try:
                self.devtools.call("Browser.close", timeout=5)
            except Exception:
                pass
            self.devtools.close()
            self.devtools = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)  # the group of the process started above
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    self.proc.wait(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    continue
            self.proc = None
            _reap_children()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def open_tab(self) -> str:
        """A new page target, attached; returns its session id."""
        dt = self.devtools
        target = dt.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = dt.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        dt.call("Page.enable", session=session)
        dt.call("Network.enable", session=session)
        # Nothing leaves the machine: the book's MathJax, fonts and images are local files.
        dt.call(
            "Network.setBlockedURLs",
            {"urls": ["http://*", "https://*", "ws://*", "wss://*"]},
            session,
        )
        dt.call(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "light"}]},
            session,
        )
        self.set_viewport(session, self.height)
        return session

    def set_viewport(self, session: str, height: int) -> None:
        self.devtools.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session,
        )


# --------------------------------------------------------------------------------------------
# In-page scripts

# Resolves when the page has loaded, MathJax (if the page loads it) has typeset, fonts are
# ready and the images have decoded. Returns what it waited for.
WAIT_JS = r"""
(async (href, timeoutMs) => {
  const t0 = Date.now();
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const left = () => Math.max(0, timeoutMs - (Date.now() - t0));
  const within = (p) => Promise.race([p.then(() => true), sleep(left()).then(() => false)]);
  while (location.href.split('#')[0] !== href || document.readyState !== 'complete') {
    if (!left()) return {error: 'the page did not finish loading'};
    await sleep(25);
  }
  const out = {mathjax: 'none', notes: []};
  if (window.MathJax) {
    if (!(MathJax.startup && MathJax.startup.promise)) {
      out.mathjax = 'not loaded';
      out.notes.push('the page configures MathJax but its script did not load: math is raw TeX');
    } else if (await within(MathJax.startup.promise)) {
      out.mathjax = 'typeset';
    } else {
      out.mathjax = 'timeout';
      out.notes.push('MathJax did not finish typesetting in time');
    }
  }
  for (const img of document.images) img.loading = 'eager';
  const pending = [...document.images].filter((i) => !i.complete)
    .map((i) => new Promise((r) => { i.addEventListener('load', r); i.addEventListener('error', r); }));
  if (!(await within(Promise.all(pending)))) out.notes.push('some images did not load in time');
  const broken = [...document.images].filter((i) => i.complete && i.naturalWidth === 0 && i.getAttribute('src'));
  for (const i of broken.slice(0, 5)) out.notes.push('broken image: ' + i.getAttribute('src'));
  await within(document.fonts.ready);
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return out;
})
"""

# Waits two frames after a resize; returns the page's height.
SETTLE_JS = r"""
new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(
  Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight))))))
"""

# Measures overflow against the content column; returns {column, findings, width, height}.
MEASURE_JS = r"""
((tol) => {
  const COLUMN = ['article.bd-article', '.bd-article', '[role="main"]', 'main', 'body'];
  let column = null, colSel = null;
  for (const s of COLUMN) { column = document.querySelector(s); if (column) { colSel = s; break; } }
  const cr = column.getBoundingClientRect(), ccs = getComputedStyle(column);
  const colRight = cr.left + column.clientLeft + column.clientWidth - parseFloat(ccs.paddingRight);
  const KINDS = [
    ['math', 'mjx-container, div.math, span.math, .MathJax_Display, .katex-display, .katex'],
    ['table', 'table'],
    ['code', 'pre, div.highlight, div[class*="highlight-"]'],
    ['image', 'img, svg, canvas, video, iframe, object, embed'],
    ['caption', 'figcaption, caption, p.caption, div.caption'],
  ];
  const ALL = KINDS.map((k) => k[1]).join(', ');
  // Put into the right margin on purpose by sphinx-book-theme; or page furniture.
  const SKIP = 'aside.margin, aside.sidebar, div.margin, figure.margin, .margin.docutils, ' +
    'span.marginnote, span.sidenote, .margin-caption figcaption, .margin-caption p.caption, ' +
    '.tag_margin, .tag_popout, .full-width, .full_width, .tag_full-width, .tag_full_width, ' +
    'button, .headerlink, .copybtn, script, style, noscript, template, mjx-assistive-mml';
  const sx = window.scrollX, sy = window.scrollY;
  const texOf = new Map();
  try {
    for (const item of MathJax.startup.document.math) texOf.set(item.typesetRoot, item.math);
  } catch (e) { /* no MathJax */ }
  const clean = (s) => (s || '').replace(/\s+/g, ' ').trim();
  const cut = (s, n = 70) => { s = clean(s); return s.length > n ? s.slice(0, n - 1) + '…' : s; };
  const snippet = (el, kind) => {
    if (kind === 'math') {
      const mjx = el.matches('mjx-container') ? el : el.querySelector('mjx-container');
      if (mjx && texOf.has(mjx)) return cut(texOf.get(mjx));
      const mml = el.querySelector('mjx-assistive-mml');
      return cut(mml ? mml.textContent : el.textContent);
    }
    if (kind === 'table') {
      const row = el.querySelector('tr');
      return cut(row ? [...row.cells].map((c) => clean(c.textContent)).join(' | ') : el.textContent);
    }
    if (kind === 'code') {
      const lines = (el.textContent || '').split('\n').filter((l) => l.trim());
      const widest = lines.reduce((a, b) => (b.length > a.length ? b : a), '');
      return cut(widest);
    }
    if (kind === 'image') {
      const src = el.getAttribute('src') || el.getAttribute('data') || '';
      return cut(el.getAttribute('alt') || el.getAttribute('aria-label') || src.split('/').pop() || el.tagName.toLowerCase());
    }
    return cut(el.textContent || el.tagName.toLowerCase());
  };
  const visible = (el) => {
    // Not in a closed <details>, a display:none or content-visibility:hidden subtree.
    if (el.checkVisibility && !el.checkVisibility({visibilityProperty: true})) return false;
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) return false;
    const cs = getComputedStyle(el);
    return cs.visibility !== 'hidden' && cs.position !== 'fixed';
  };
  const clips = (cs) => cs.overflowX !== 'visible';
  const scrollMode = (cs) => (cs.overflowX === 'hidden' || cs.overflowX === 'clip' ? 'clipped' : 'scroll');
  // The right edge of a box's padding box: what it shows of its content (fractional px).
  const innerRight = (el) => {
    const cs = getComputedStyle(el), bl = parseFloat(cs.borderLeftWidth), br = parseFloat(cs.borderRightWidth);
    const scrollbar = Math.max(0, el.offsetWidth - el.clientWidth - bl - br);
    return el.getBoundingClientRect().right - br - scrollbar;
  };
  // The narrowest box among the element's ancestors, up to the column, that clips it.
  const clipMemo = new Map();
  const clipOf = (el) => {
    const a = el.parentElement;
    if (!a) return {right: Infinity, box: null};
    if (clipMemo.has(a)) return clipMemo.get(a);
    const outer = a === column ? {right: Infinity, box: null} : clipOf(a);
    let res = outer;
    if (clips(getComputedStyle(a))) {
      const right = innerRight(a);
      if (right < outer.right) res = {right, box: a};
    }
    clipMemo.set(a, res);
    return res;
  };
  // How far right the element's content reaches (content spilling out of it included), how
  // far of that is visible (ancestor scroll boxes up to the column clip it), and who clips.
  const measure = (el, spill) => {
    const r = el.getBoundingClientRect(), cs = getComputedStyle(el);
    const ownClip = clips(cs) ? innerRight(el) : Infinity;
    let extent = r.right;
    const glyphs = el.matches('mjx-math') ? [el] : [...el.querySelectorAll('mjx-math')];
    if (glyphs.length) {
      // Typeset math: where the rendered formula ends (not the hidden assistive MathML).
      extent = Math.max(...glyphs.map((g) => g.getBoundingClientRect().right));
      if (!clips(cs)) extent = Math.max(extent, r.right);
    } else if ((spill || clips(cs)) && cs.display !== 'inline') {
      // Content reaching past the box: spilling out of it, or scrolled/clipped inside it.
      extent = Math.max(extent, r.left + el.clientLeft + el.scrollWidth);
    }
    const {right: clipRight, box: clipper} = clipOf(el);
    return {el, extent, ownClip, clipRight, clipper};
  };
  const findings = [];
  const add = (m, kind, mode, px, box) => {
    const r = m.el.getBoundingClientRect();
    const sec = m.el.closest('section[id], [id]:is(h1,h2,h3,h4,h5,h6)');
    findings.push({el: m.el, box: box || null, kind, mode, px: Math.round(px),
      snippet: snippet(m.el, kind), section: sec ? sec.id : '', y: Math.round(r.top + sy)});
  };
  const check = (m, kind) => {
    const shown = Math.min(m.extent, m.ownClip);  // what the element itself lets show
    const visRight = Math.min(shown, m.clipRight);
    if (visRight > colRight + tol) {
      add(m, kind, 'overflow', visRight - colRight);
    } else if (shown > m.clipRight + tol) {
      add(m, kind, scrollMode(getComputedStyle(m.clipper)), shown - m.clipRight, m.clipper);
    } else if (m.extent > m.ownClip + tol) {
      add(m, kind, scrollMode(getComputedStyle(m.el)), m.extent - m.ownClip, m.el);
    }
  };
  for (const [kind, sel] of KINDS) {
    for (const el of column.querySelectorAll(sel)) {
      if (el.closest(SKIP) || !visible(el)) continue;
      if (kind !== 'math' && el.closest('mjx-container')) continue;
      check(measure(el, true), kind);
    }
  }
  // Anything else that reaches past the column (a long URL or inline literal): its own box
  // only, and not a wrapper of the elements above (they are checked themselves).
  for (const el of column.querySelectorAll('*')) {
    if (el.closest(SKIP) || el.closest(ALL) || el.querySelector(ALL) || !visible(el)) continue;
    check(measure(el, false), 'text');
  }
  // One finding per culprit: drop those inside another finding's element, or clipped by the
  // same scroll box as an earlier one (keep the largest).
  findings.sort((a, b) => (a.el === b.el ? 0
    : a.el.compareDocumentPosition(b.el) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1));
  const kept = [];
  for (const f of findings) {
    if (kept.some((k) => k.el !== f.el && k.el.contains(f.el))) continue;
    const same = f.box && kept.find((k) => k.box === f.box);
    if (same) { if (f.px > same.px) { same.px = f.px; } continue; }
    if (kept.some((k) => k.el === f.el)) continue;
    kept.push(f);
  }
  const doc = document.documentElement;
  return {
    column: colSel,
    columnRight: Math.round(colRight + sx),
    pageOverflow: Math.max(0, doc.scrollWidth - doc.clientWidth),
    width: Math.ceil(Math.max(doc.scrollWidth, document.body.scrollWidth)),
    height: Math.ceil(Math.max(doc.scrollHeight, document.body.scrollHeight)),
    findings: kept.map(({el, box, ...f}) => f),
  };
})
"""


# --------------------------------------------------------------------------------------------
# Pages


def book_pages(html: Path, patterns: list[str] | None) -> tuple[list[Path], list[str]]:
    """The book's pages under ``html`` (relative paths), and notes on those skipped."""
    pages, notes = [], []
    for path in sorted(html.rglob("*.html")):
        rel = path.relative_to(html)
        if any(part.startswith((".", "_")) for part in rel.parts[:-1]):
            continue  # _static, _sources, _images, .doctrees
        if len(rel.parts) == 1 and rel.name in SKIP_PAGES:
            continue
        if patterns and not any(fnmatch.fnmatch(rel.as_posix(), p) for p in patterns):
            continue
        head = path.read_text(errors="replace")[:4096].lower()
        if path.stat().st_size < 4096 and 'http-equiv="refresh"' in head:
            notes.append(f"{rel.as_posix()}: a redirect stub, skipped")
            continue
        pages.append(rel)
    return pages, notes


def check_page(
    browser: Chromium,
    session: str,
    html: Path,
    rel: Path,
    out: Path | None,
    *,
    tolerance: float,
    timeout: float,
    max_height: int = 100_000,
) -> dict:
    dt = browser.devtools
    url = (html / rel).resolve().as_uri()
    t0 = time.monotonic()
    browser.set_viewport(session, browser.height)
    res = dt.call("Page.navigate", {"url": url}, session, timeout=timeout)
    if res.get("errorText"):
        raise RuntimeError(f"navigation failed: {res['errorText']}")
    wait = f"{WAIT_JS}({json.dumps(url)}, {int(timeout * 1000)})"
    for attempt in range(50):
        try:
            waited = dt.evaluate(wait, session, timeout=timeout + 5)
            break
        except RuntimeError as err:  # evaluated while the old document was being replaced
            if "context" not in str(err).lower() or attempt == 49:
                raise
            time.sleep(0.1)
    if waited.get("error"):
        raise RuntimeError(waited["error"])
    t1 = time.monotonic()
    measured = dt.evaluate(f"{MEASURE_JS}({float(tolerance)})", session, timeout=timeout)
    t2 = time.monotonic()
    result = {
        "mathjax": waited["mathjax"],
        "notes": waited["notes"],
        **measured,
        "screenshot": None,
    }
    result["timing"] = {"load": round(t1 - t0, 2), "measure": round(t2 - t1, 2), "screenshot": 0.0}
    if out is not None:
        png = out / rel.with_suffix(".png")
        png.parent.mkdir(parents=True, exist_ok=True)
        # The whole page in one viewport (captureBeyondViewport alone misplaces the theme's
        # sticky sidebars and shifts the article); grow it until the height settles.
        height = measured["height"]
        for _ in range(3):
            height = min(max(1, height), max_height)
            browser.set_viewport(session, height)
            new = dt.evaluate(SETTLE_JS, session, timeout=timeout)
            if min(new, max_height) == height:
                break
            height = new
        result["screenshot_height"] = height
        if height < measured["height"]:
            result["notes"].append(f"screenshot cut at --max-height {height} px")
        shot = dt.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": browser.width, "height": height, "scale": 1},
            },
            session,
            timeout=timeout + 30,
        )
        png.write_bytes(base64.b64decode(shot["data"]))
        result["screenshot"] = str(png)
        result["timing"]["screenshot"] = round(time.monotonic() - t2, 2)
    return result


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--html",
        type=Path,
        default=ROOT / "_build" / "html",
        help="built HTML folder (default _build/html)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "_build" / "screenshots",
        help="screenshot folder (default _build/screenshots)",
    )
    parser.add_argument("--no-screenshots", action="store_true", help="measure only")
    parser.add_argument(
        "--width", type=int, default=1400, help="window width in CSS px (default 1400)"
    )
    parser.add_argument(
        "--height", type=int, default=900, help="window height while measuring (default 900)"
    )
    parser.add_argument(
        "--pages",
        action="append",
        metavar="GLOB",
        help="only pages whose path under --html matches (e.g. 'notebooks/07*'); repeatable",
    )
    parser.add_argument(
        "--max-height",
        type=int,
        default=100_000,
        help="screenshots are cut at this many px (default 100000)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=2.0,
        help="px an element may pass the column's edge (default 2)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per page (default 60)")
    parser.add_argument("--chromium", help="Chromium/Chrome binary (default: chromium on PATH)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    # SIGTERM (a timeout, CI cancelling) unwinds like Ctrl-C, so Chromium is always killed.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        binary = find_chromium(args.chromium)
        html = args.html.resolve()
        if not html.is_dir():
            raise CheckError(f"{args.html}: no such folder; build the book first (make book)")
        pages, notes = book_pages(html, args.pages)
        if not pages:
            raise CheckError(
                f"no book pages under {args.html}"
                + (f" matching {args.pages}" if args.pages else "")
            )
    except CheckError as err:
        print(f"check_pages: {err}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"[skip] {note}")
    out = None if args.no_screenshots else args.out
    results: dict[str, dict] = {}
    findings: list[Finding] = []
    errors: list[str] = []
    shots = 0
    t_start = time.monotonic()
    try:
        with Chromium(binary, args.width, args.height, timeout=30) as browser:
            session = browser.open_tab()
            for rel in pages:
                name = rel.as_posix()
                t0 = time.monotonic()
                try:
                    res = check_page(
                        browser,
                        session,
                        html,
                        rel,
                        out,
                        tolerance=args.tolerance,
                        timeout=args.timeout,
                        max_height=args.max_height,
                    )
                except (RuntimeError, TimeoutError) as err:
                    errors.append(f"{name}: {err}")
                    print(f"[error] {name}: {err}")
                    session = browser.open_tab()  # a fresh tab for the next page
                    continue
                res["seconds"] = round(time.monotonic() - t0, 2)
                t = res["timing"]
                results[name] = res
                page_findings = [Finding(page=name, **f) for f in res["findings"]]
                findings += page_findings
                shots += res["screenshot"] is not None
                print(
                    f"[page] {name}: {len(page_findings)} finding(s), {res['width']}x{res['height']} px, "
                    f"MathJax {res['mathjax']}, column {res['column']}, {res['seconds']:.1f} s "
                    f"(load {t['load']:.1f}, measure {t['measure']:.1f}, screenshot {t['screenshot']:.1f})"
                )
                for note in res["notes"]:
                    print(f"[note] {name}: {note}")
                for f in page_findings:
                    print(f"  {f.line()}")
                if not page_findings and res["pageOverflow"] > args.tolerance:
                    print(
                        f"[note] {name}: the page scrolls sideways by {res['pageOverflow']} px, outside the content column"
                    )
    except CheckError as err:
        print(f"check_pages: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("check_pages: interrupted", file=sys.stderr)
        return 130
    elapsed = time.monotonic() - t_start
    checked = len(results)
    print(
        f"[summary] {checked} page(s) checked in {elapsed:.1f} s ({elapsed / max(checked, 1):.1f} s/page), "
        f"{shots} screenshot(s) in {out if out else '(none)'}, {len(findings)} finding(s)"
        + (f" on {len({f.page for f in findings})} page(s)" if findings else "")
        + (f", {len(errors)} page(s) failed" if errors else "")
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "html": str(html),
            "width": args.width,
            "tolerance": args.tolerance,
            "pages": results,
            "findings": [asdict(f) for f in findings],
            "errors": errors,
            "skipped": notes,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if errors:
        return 2
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
