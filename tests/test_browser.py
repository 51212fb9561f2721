"""asv's site (``asv publish``) and lnbench's dashboard, loaded in a real headless browser.

Data: a small real asv run (two implementations, float32, quick grid, ``asv --quick``) in a
temporary results folder, plus a 12-commit synthetic history on a second machine (with one
injected slowdown) so the dashboard has histories, change markers and a regression table to
draw. Then ``asv publish`` and ``lnbench dashboard`` write html/ and site/, which are served
on 127.0.0.1 (an ephemeral port) and opened in Debian's Chromium driven by Playwright.

Checked: no console error, page error or failed request on either site; every image of the
dashboard loaded (``naturalWidth > 0``); the dashboard's link to asv's site works; asv's pages
render their benchmark list and a graph. Screenshots go to the pytest tmp dir and, when
``LNBENCH_SCREENSHOTS=DIR`` is set, to DIR too.

**The one filter.** asv 0.6's pages load jQuery, flot, Bootstrap, stupidtable and md5 from
public CDNs (cdn.jsdelivr.net, cdnjs.cloudflare.com, code.jquery.com). Offline, every page of
asv's site fails outright ("airspeed velocity error") — an artefact of the sandbox, not of the
site. The test therefore routes exactly those URLs (``ASV_CDN`` below) to the same files from
npm, cached in ``LNBENCH_ASV_ASSETS`` (default ``~/.cache/lnbench/asv-cdn``); they are fetched
once with ``npm pack`` (``python tests/test_browser.py --fetch-asv-assets`` does it ahead of
time). Every other non-local request is aborted and counts as a failure, so a new CDN
dependency of a future asv shows up here. Five of the ten files are byte-identical to the CDN's
and pass the pages' Subresource Integrity check in the browser. The other five are stand-ins:
cdnjs's minified flot 0.8.3 files come from npm's unminified flot 0.8.3 (same code), and
stupidtable 1.0.1 (on cdnjs only) from npm's stupid-table-plugin 1.1.3 (same plugin API); for
exactly those tags the ``integrity`` attribute is removed from the served HTML (the check
computes the hash, so a file that does match keeps its check). Nothing else is filtered:
every console error, page error, failed request and HTTP error is a failure. Without npm or
the assets, the asv-site test skips with the reason; the dashboard test does not need them.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("LNBENCH_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MACHINE = "browser-test"
TINY = {"LNBENCH_IMPLS": "numpy.kevin,torch.native", "LNBENCH_DTYPES": "float32",
        "LNBENCH_GRID": "quick"}

_JSD, _CDNJS = "https://cdn.jsdelivr.net/npm", "https://cdnjs.cloudflare.com/ajax/libs"
#: URL asv's pages load -> (npm package@version, file inside the package)
ASV_CDN: dict[str, tuple[str, str]] = {
    "https://code.jquery.com/jquery-3.3.1.min.js": ("jquery@3.3.1", "dist/jquery.min.js"),
    f"{_CDNJS}/flot/0.8.3/jquery.flot.min.js": ("flot@0.8.3", "jquery.flot.js"),
    f"{_CDNJS}/flot/0.8.3/jquery.flot.time.min.js": ("flot@0.8.3", "jquery.flot.time.js"),
    f"{_CDNJS}/flot/0.8.3/jquery.flot.selection.min.js":
        ("flot@0.8.3", "jquery.flot.selection.js"),
    f"{_CDNJS}/flot/0.8.3/jquery.flot.categories.min.js":
        ("flot@0.8.3", "jquery.flot.categories.js"),
    f"{_CDNJS}/stupidtable/1.0.1/stupidtable.min.js":
        ("stupid-table-plugin@1.1.3", "stupidtable.min.js"),
    f"{_CDNJS}/blueimp-md5/2.19.0/js/md5.min.js": ("blueimp-md5@2.19.0", "js/md5.min.js"),
    f"{_JSD}/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js":
        ("flot-orderbars@1.0.0", "js/jquery.flot.orderBars.js"),
    f"{_JSD}/bootstrap@3.1.1/dist/css/bootstrap.min.css":
        ("bootstrap@3.1.1", "dist/css/bootstrap.min.css"),
    f"{_JSD}/bootstrap@3.1.1/dist/js/bootstrap.min.js":
        ("bootstrap@3.1.1", "dist/js/bootstrap.min.js"),
}


def assets_dir() -> Path:
    return Path(os.environ.get("LNBENCH_ASV_ASSETS")
                or Path.home() / ".cache" / "lnbench" / "asv-cdn")


def _asset(pkg: str, path: str) -> Path:
    return assets_dir() / pkg / path


def fetch_asv_assets(timeout: float = 120) -> str | None:
    """Fetch the npm packages behind ``ASV_CDN`` (``npm pack``); None, or why it failed."""
    missing = sorted({pkg for pkg, path in ASV_CDN.values() if not _asset(pkg, path).exists()})
    if not missing:
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed (needed once to fetch asv's CDN assets)"
    with tempfile.TemporaryDirectory() as tmp:
        for pkg in missing:
            try:
                p = subprocess.run([npm, "pack", pkg, "--silent", "--pack-destination", tmp],
                                   capture_output=True, text=True, timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                return f"npm pack {pkg}: timed out after {timeout:.0f} s"
            tgz = Path(tmp) / (p.stdout.strip().splitlines() or ["?"])[-1]
            if p.returncode or not tgz.is_file():
                return f"npm pack {pkg} failed: {(p.stderr or p.stdout).strip()[-300:]}"
            wanted = {f"package/{path}" for p, path in ASV_CDN.values() if p == pkg}
            with tarfile.open(tgz) as tf:
                for m in tf.getmembers():
                    if m.isfile() and m.name in wanted:
                        dest = assets_dir() / pkg / m.name.removeprefix("package/")
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        src = tf.extractfile(m)
                        if src is not None:
                            dest.write_bytes(src.read())
    still = [u for u, (pkg, path) in ASV_CDN.items() if not _asset(pkg, path).exists()]
    return f"assets missing after npm pack: {still}" if still else None


# --- data: a tiny real asv run + a synthetic history, published and dashboarded --------------


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 240) -> None:
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       check=False)
    assert p.returncode == 0, f"{' '.join(cmd)} -> {p.returncode}\n{p.stdout[-3000:]}" \
                              f"\n{p.stderr[-3000:]}"


def _seed_history(results: Path, work: Path) -> None:
    """12 synthetic commits on 'synthetic-box' (numpy.kevin time_backward 1.5x slower from
    commit 8), written with the real suite's benchmark versions."""
    from lnbench.report.synthetic import Injection, write_suite_history

    bj = json.loads((results / "benchmarks.json").read_text())
    unq = [[p.strip("'") for p in ps]
           for ps in bj["bench_backward.Accuracy.track_rel_err_dx"]["params"]]
    synth = work / "synthetic"
    write_suite_history(
        synth, machines=("synthetic-box",), n_commits=12, impls=unq[0], shapes=unq[1],
        dtypes=unq[2], dists=unq[3],
        injections=[Injection("synthetic-box", "time_backward", {"impl": "numpy.kevin"}, 8, 1.5)],
    )
    (results / "synthetic-box").mkdir()
    for f in (synth / "synthetic-box").iterdir():
        d = json.loads(f.read_text())
        for name, row in d.get("results", {}).items():
            row[2] = bj[name]["version"]
        (results / "synthetic-box" / f.name).write_text(json.dumps(d))
    (results / "lnbench-machines").mkdir(exist_ok=True)
    shutil.copy(synth / "lnbench-machines" / "synthetic-box.json",
                results / "lnbench-machines" / "synthetic-box.json")


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tmp/html (asv publish) and tmp/site (lnbench dashboard) from real + synthetic results."""
    tmp = tmp_path_factory.mktemp("browser")
    home = tmp / "home"
    home.mkdir()
    conf = {
        "version": 1, "project": "lnbench", "project_url": "https://github.com/lnbench/lnbench",
        "repo": str(ROOT), "branches": ["main"], "dvcs": "git",
        "environment_type": "virtualenv", "pythons": ["3.11"],
        "benchmark_dir": str(ROOT / "benchmarks"), "env_dir": str(tmp / "env"),
        "results_dir": str(tmp / "results"), "html_dir": str(tmp / "html"),
        "show_commit_url": "https://github.com/lnbench/lnbench/commit/",
        "launch_method": "forkserver",
    }
    (tmp / "asv.conf.json").write_text(json.dumps(conf, indent=2))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LNBENCH_", "ASV_"))}
    env.update(TINY, HOME=str(home), ASV_CONF_DIR=str(tmp))
    with contextlib.suppress(ImportError):
        import matplotlib

        env.setdefault("MPLCONFIGDIR", matplotlib.get_cachedir())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
    asv = [sys.executable, "-m", "asv"]
    cfg = ["--config", str(tmp / "asv.conf.json")]
    _run([*asv, "machine", "--yes", "--machine", MACHINE, *cfg], env, tmp)
    # every benchmark: asv's summary page asks for a graph of each one in benchmarks.json
    _run([*asv, "run", "--python=same", "--quick", "--set-commit-hash", head, "--machine",
          MACHINE, *cfg], env, tmp)
    _seed_history(tmp / "results", tmp)
    _run([*asv, "publish", *cfg], env, tmp)
    _run([sys.executable, "-m", "lnbench", "dashboard", "--results", str(tmp / "results"),
          "--out", str(tmp / "site"), "--asv-html", "../html/index.html"], env, ROOT)
    return tmp


# --- the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def server(published: Path) -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(published)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


class Watch:
    """A page's console errors, page errors, failed requests and HTTP errors."""

    def __init__(self, page: Any, base: str, serve_cdn: bool) -> None:
        self.problems: list[str] = []
        self.cdn_served: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(
            f"console error: {m.text} @ {m.location.get('url', '')}"))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(
            f"request failed: {r.url} ({r.failure})"))
        page.on("response", lambda r: r.status >= 400 and self.problems.append(
            f"HTTP {r.status}: {r.url}"))

        self.sri_dropped: list[str] = []

        def route(r: Any) -> None:
            url = r.request.url
            if serve_cdn and url.startswith(base) and url.split("#")[0].endswith(".html"):
                resp = r.fetch()
                html, dropped = drop_substitute_integrity(resp.text())
                self.sri_dropped += dropped
                r.fulfill(response=resp, body=html)
            elif url.startswith(base):
                r.continue_()
            elif serve_cdn and url in ASV_CDN:
                pkg, path = ASV_CDN[url]
                self.cdn_served.append(url)
                ctype = "text/css" if path.endswith(".css") else "application/javascript"
                r.fulfill(status=200, body=_asset(pkg, path).read_bytes(), content_type=ctype)
            else:  # nothing else may leave the machine; the abort is reported as a failure
                r.abort()

        page.route("**/*", route)


def _sri_ok(integrity: str, data: bytes) -> bool:
    alg, _, want = integrity.partition("-")
    try:
        return base64.b64encode(hashlib.new(alg, data).digest()).decode() == want
    except ValueError:
        return False


def drop_substitute_integrity(html: str) -> tuple[str, list[str]]:
    """Remove the ``integrity`` attribute of the ``ASV_CDN`` tags whose npm stand-in is not
    byte-identical to the CDN file (the browser would block it); byte-identical copies keep
    theirs, and the browser verifies them. Returns the page and the URLs changed."""
    dropped: list[str] = []

    def fix(m: re.Match[str]) -> str:
        tag = m.group(0)
        url = re.search(r'(?:src|href)="([^"]+)"', tag)
        integ = re.search(r'\sintegrity="([^"]+)"', tag)
        if not (url and integ and url.group(1) in ASV_CDN):
            return tag
        pkg, path = ASV_CDN[url.group(1)]
        f = _asset(pkg, path)
        if f.exists() and _sri_ok(integ.group(1), f.read_bytes()):
            return tag
        dropped.append(url.group(1))
        return tag.replace(integ.group(0), "")

    return re.sub(r"<(?:script|link)\b[^>]*>", fix, html), dropped


def _shot(page: Any, tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    page.screenshot(path=str(out), full_page=True)
    extra = os.environ.get("LNBENCH_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(extra) / name)
    return out


def test_dashboard_loads_without_errors_and_every_plot_shows(browser: Any, server: str,
                                                             tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    w = Watch(page, server, serve_cdn=False)
    page.goto(f"{server}/site/index.html", wait_until="networkidle")
    imgs = page.evaluate("""() => Array.from(document.images).map(i => ({
        src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,
        w: i.naturalWidth, h: i.naturalHeight}))""")
    shot = _shot(page, tmp_path, "dashboard.png")
    assert w.problems == [], "\n".join(w.problems)
    # the synthetic machine gives a history, a GB/s-vs-N and an accuracy plot; the real one
    # at least its time history
    assert len(imgs) >= 4, imgs
    bad = [i for i in imgs if not i["ok"]]
    assert not bad, f"plots that did not load: {bad}"
    assert all(i["w"] >= 200 and i["h"] >= 100 for i in imgs), imgs
    text = page.inner_text("body")
    assert "synthetic-box" in text and MACHINE in text
    assert "numpy.kevin" in text  # the injected regression is listed
    assert shot.stat().st_size > 20_000

    # the link to asv's own site resolves (the page itself is checked below)
    href = page.get_attribute("a[href$='html/index.html']", "href")
    assert href == "../html/index.html"
    resp = page.request.get(f"{server}/site/{href}")
    assert resp.ok, resp.status
    page.close()


@pytest.fixture(scope="module")
def cdn_assets() -> None:
    why = fetch_asv_assets()
    if why:
        pytest.skip(f"asv's site needs its CDN scripts, not available offline: {why}")


def test_asv_site_renders_without_errors(browser: Any, server: str, cdn_assets: None,
                                         tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    w = Watch(page, server, serve_cdn=True)
    page.goto(f"{server}/html/index.html", wait_until="networkidle")
    # the summary grid: one box per benchmark, drawn by asv's JS from index.json
    page.wait_for_selector(".benchmark-container", timeout=15_000)
    n_bench = page.locator(".benchmark-container").count()
    _shot(page, tmp_path, "asv-index.png")
    assert page.title() != "airspeed velocity error"
    assert n_bench >= 2, n_bench

    # one graph page, opened from its box on the grid: flot draws it from graphs/... JSON
    page.click("a.benchmark-container[href='#bench_backward.Backward.time_backward']")
    page.wait_for_selector("#graph-display canvas.flot-base", state="visible", timeout=15_000)
    page.wait_for_load_state("networkidle")
    page.mouse.move(700, 990)  # away from the sidebar's hover pop-ups
    _shot(page, tmp_path, "asv-graph.png")
    assert "time_backward" in page.inner_text("#title")
    assert "impl-numpy.kevin" in page.inner_text("#graph-display")  # the parameter legend

    page.click("#nav-li-regressions a")
    page.wait_for_selector("#regressions-display", state="visible", timeout=15_000)
    page.wait_for_load_state("networkidle")
    assert w.problems == [], "\n".join(w.problems)
    assert len(set(w.cdn_served)) == len(ASV_CDN), sorted(set(ASV_CDN) - set(w.cdn_served))
    # only the stand-ins lose their integrity check
    assert {u for u in w.sri_dropped} <= {u for u, (pkg, _) in ASV_CDN.items()
                                          if pkg.startswith(("flot@", "stupid-table"))}
    page.close()


if __name__ == "__main__":  # python tests/test_browser.py --fetch-asv-assets
    if sys.argv[1:] == ["--fetch-asv-assets"]:
        why = fetch_asv_assets()
        print(why or f"asv CDN assets ready in {assets_dir()}")
        sys.exit(1 if why else 0)
    print(__doc__.splitlines()[0])
    print("usage: python tests/test_browser.py --fetch-asv-assets")
    sys.exit(2)
