"""matrix.html in a real headless Chromium: cell text, colours, the status filter,
the screenshot's pixels, and that the page fetches nothing from the network."""

import json
import re
import socket
import threading

import pytest
from PIL import Image

from lab.schema import Expectation
from lab.report import write_reports
from lab.report.browser import load
from lab.report.compare import compare
from lab.report.html import STATUS_COLORS
from lab.results import CellResult, combine_attempts

pytestmark = pytest.mark.integration

# Reads what the browser computed, after the page's own script ran, then unticks
# PASS in the filter and reads again. The result goes into the DOM for --dump-dom.
PROBE = """
<script>
(function () {
  function cells() {
    return Array.from(document.querySelectorAll("td[data-cell]")).map(function (td) {
      var r = td.getBoundingClientRect();
      return {cell: td.dataset.cell, text: td.innerText, status: td.dataset.status,
              background: getComputedStyle(td).backgroundColor, filtered: td.classList.contains("filtered"),
              left: r.left, top: r.top, width: r.width, height: r.height};
    });
  }
  var before = cells();
  var box = document.querySelector("input[name=status][value=PASS]");
  box.checked = false;
  box.dispatchEvent(new Event("change", {bubbles: true}));
  var after = cells();
  var rowsHidden = Array.from(document.querySelectorAll("tr.row.filtered")).map(function (tr) {
    return tr.querySelector("th").innerText;
  });
  var fetched = performance.getEntriesByType("resource").map(function (e) { return e.name; });
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({before: before, after: after, rowsHidden: rowsHidden, fetched: fetched,
                                    changes: document.getElementById("changes") ? document.getElementById("changes").innerText : null});
  document.body.appendChild(out);
})();
</script>
"""


def _every_status() -> tuple[list[CellResult], dict]:
    raw = {"PASS": "PASS", "FAIL": "FAIL", "XFAIL": "FAIL", "XPASS": "PASS", "SKIP": "SKIP",
           "ERROR": "ERROR", "TIMEOUT": "TIMEOUT", "XERROR": "ERROR"}
    cells = []
    for n, (status, outcome) in enumerate(raw.items()):
        cell = CellResult("i386-pae", "6.1", "swp_exclusive", outcome, f"{outcome}: <b>not bold</b>",
                          duration_s=1.5 + n)
        cell.arch = ["i386-pae", "i386", "sparc64", "riscv64", "x86_64", "armv7", "m68k", "s390x"][n]
        if status in ("XFAIL", "XPASS"):
            cell.apply_expectation("FAIL", "marker landed in 6.3")
        if status == "XERROR":
            cell.error_code = "build.failed"
            cell.apply_expectations([Expectation(reason="known build failure", status="ERROR", error="build.failed")])
        cells.append(cell)
    cells.append(CellResult("i386-pae", "6.1", "only_pass", "PASS", "PASS"))
    cells.append(combine_attempts([CellResult("sparc64", "6.1", "only_pass", s, f"{s}: x") for s in ("FAIL", "PASS", "FAIL")]))
    arches = sorted({c.arch for c in cells} | {"mips"})
    meta = {"run_id": "browser", "started": "", "finished": "", "arches": arches, "kernels": ["6.1"],
            "testcases": ["swp_exclusive", "only_pass"], "jobs": [[a, "6.1"] for a in arches]}
    return cells, meta


# Chromium's own background services (component updater, sign-in, network time):
# they call out whatever the page is, even with --disable-background-networking.
# The page's requests are everything else; the control test shows they are caught.
BROWSER_SERVICES = ("update.googleapis.com", "accounts.google.com", "clients2.google.com")


def _page_requests(requests: list[str]) -> list[str]:
    def host(request: str) -> str:
        target = request.split()[1] if len(request.split()) > 1 else request
        return re.sub(r"^[a-z]+://", "", target).split("/")[0].split(":")[0]
    return [r for r in requests if host(r) not in BROWSER_SERVICES]


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))


class _Recorder:
    """A TCP listener standing in for the whole network: it records the first line of
    every request sent over it. A connection that sends nothing is not a request:
    Chromium opens one to its proxy in advance (a preconnect) and, on a slow first
    start, may close it unused. Each connection is read until its request line, its
    end, or close(), so a request that comes late is never missed."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.requests: list[str] = []
        self.unused_connections = 0
        self.done = threading.Event()
        self.readers: list[threading.Thread] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self):
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            reader = threading.Thread(target=self._read, args=(conn,), daemon=True)
            reader.start()
            self.readers.append(reader)

    def _read(self, conn):
        conn.settimeout(0.2)
        data = b""
        with conn:
            while b"\r\n" not in data and not self.done.is_set() and len(data) < 65536:
                try:
                    chunk = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
        if data:
            self.requests.append(data.decode("latin-1").split("\r\n")[0])
        else:
            self.unused_connections += 1

    def close(self):
        self.done.set()
        self.thread.join()
        for reader in self.readers:
            reader.join()
        self.sock.close()


@pytest.fixture
def report(tmp_path):
    cells, meta = _every_status()
    baseline = [CellResult("i386", "6.1", "swp_exclusive", "PASS", "PASS"),
                CellResult("riscv64", "6.1", "swp_exclusive", "FAIL", "FAIL")]
    write_reports(tmp_path, cells, meta, compare(baseline, cells, "last-night"))
    return tmp_path


def test_matrix_in_a_real_browser(report):
    probe_page = report / "probe.html"
    probe_page.write_text((report / "matrix.html").read_text().replace("</body>", PROBE + "</body>"))
    recorder = _Recorder()
    try:
        dom = load(probe_page, dump_dom=True, proxy=recorder.proxy)
        shot = report / "matrix.png"
        load(report / "matrix.html", screenshot=shot, proxy=recorder.proxy)
    finally:
        recorder.close()
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe script did not run"
    probe = json.loads(found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))

    # Nothing left the machine: no request reached the stand-in network, and every
    # resource the page loaded is a local file.
    assert _page_requests(recorder.requests) == []
    assert all(url.startswith("file:") for url in probe["fetched"]), probe["fetched"]

    before = {c["cell"]: c for c in probe["before"]}
    expected = {"i386-pae/6.1/swp_exclusive": "PASS", "i386/6.1/swp_exclusive": "FAIL",
                "sparc64/6.1/swp_exclusive": "XFAIL", "riscv64/6.1/swp_exclusive": "XPASS",
                "x86_64/6.1/swp_exclusive": "SKIP", "armv7/6.1/swp_exclusive": "ERROR",
                "m68k/6.1/swp_exclusive": "TIMEOUT", "s390x/6.1/swp_exclusive": "XERROR",
                "mips/6.1/swp_exclusive": "NOTRUN"}
    for key, status in expected.items():
        cell = before[key]
        assert cell["status"] == status
        assert cell["text"].startswith("not run" if status == "NOTRUN" else status), cell["text"]
        assert cell["background"] == "rgb({}, {}, {})".format(*_rgb(STATUS_COLORS[status])), (key, cell)
    assert "exp FAIL \u00b7 act FAIL" in before["sparc64/6.1/swp_exclusive"]["text"]
    assert "exp FAIL \u00b7 act PASS" in before["riscv64/6.1/swp_exclusive"]["text"]
    assert before["sparc64/6.1/only_pass"]["text"].startswith("FAIL 2/3")
    assert "was PASS" in before["i386/6.1/swp_exclusive"]["text"]

    # The filter: with PASS unticked, PASS cells fade and a row of nothing but PASS
    # (and not-run) cells is hidden; other cells stay as they were.
    after = {c["cell"]: c for c in probe["after"]}
    assert after["i386-pae/6.1/swp_exclusive"]["filtered"] and not after["i386/6.1/swp_exclusive"]["filtered"]
    assert probe["rowsHidden"] == []  # only_pass has the FAIL 2/3 cell of sparc64
    changes = probe["changes"]
    order = [changes.index(title) for title in ("Newly failing: 3", "Newly passing: 0", "Newly erroring: 1",
                                                 "Changed expectations: 1", "Other changes: 5")]
    assert order == sorted(order), changes
    assert "i386/6.1 swp_exclusive: PASS \u2192 FAIL" in changes

    # The screenshot shows those colours where the browser laid the cells out
    # (a point inside each cell's padding, away from its text).
    image = Image.open(shot).convert("RGB")
    for key, status in expected.items():
        cell = before[key]
        x, y = int(cell["left"] + cell["width"] - 4), int(cell["top"] + cell["height"] - 3)
        assert image.getpixel((x, y)) == _rgb(STATUS_COLORS[status]), (key, (x, y))


def test_the_network_check_can_fail(report):
    """The recorder is a real check: a page that references the network is caught."""
    page = report / "external.html"
    page.write_text('<html><body><img src="http://example.invalid/pixel.png"></body></html>')
    recorder = _Recorder()
    try:
        load(page, dump_dom=True, proxy=recorder.proxy)
    finally:
        recorder.close()
    assert any("example.invalid" in r for r in _page_requests(recorder.requests)), recorder.requests


HISTORY_PROBE = """
<script>
(function () {
  var rows = Array.from(document.querySelectorAll("tr[data-cell]")).map(function (tr) {
    return {cell: tr.dataset.cell, flaky: tr.dataset.flaky === "yes",
            nights: Array.from(tr.querySelectorAll("td.st")).map(function (td) {
              var r = td.getBoundingClientRect();
              return {status: td.dataset.status, text: td.innerText, background: getComputedStyle(td).backgroundColor,
                      left: r.left, top: r.top, width: r.width, height: r.height};
            })};
  });
  var fetched = performance.getEntriesByType("resource").map(function (e) { return e.name; });
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({rows: rows, fetched: fetched});
  document.body.appendChild(out);
})();
</script>
"""


def test_history_in_a_real_browser(tmp_path):
    """history.html of five synthetic nights and two real runs: a coloured letter per
    night in the browser's layout and on screen, the flaky row marked, no network."""
    from nights import SYNTHETIC, write_nights
    from lab import history
    from lab.history import LETTERS
    from lab.report.html import write_history

    nights = history.read_nights(write_nights(tmp_path))
    page = write_history(tmp_path / "out", nights, history.cell_histories(nights))
    probe_page = page.with_name("probe.html")
    probe_page.write_text(page.read_text().replace("</body>", HISTORY_PROBE + "</body>"))
    recorder = _Recorder()
    try:
        dom = load(probe_page, dump_dom=True, proxy=recorder.proxy)
        shot = tmp_path / "history.png"
        load(page, screenshot=shot, proxy=recorder.proxy)
    finally:
        recorder.close()
    assert _page_requests(recorder.requests) == []
    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1).replace("&amp;", "&"))
    assert all(url.startswith("file:") for url in probe["fetched"]), probe["fetched"]
    rows = {tuple(r["cell"].split("/")): r for r in probe["rows"]}
    assert [key for key, row in rows.items() if row["flaky"]] == [("i386-pae", "6.12", "swp_exclusive")]
    image = Image.open(shot).convert("RGB")
    for key, statuses in SYNTHETIC.items():
        for status, night in zip(statuses, rows[key]["nights"]):
            status = status or "NOTRUN"
            assert night["status"] == status and night["text"] == LETTERS.get(status, "."), (key, night)
            if status != "NOTRUN":
                assert night["background"] == "rgb({}, {}, {})".format(*_rgb(STATUS_COLORS[status])), (key, night)
                x, y = int(night["left"] + 2), int(night["top"] + night["height"] - 2)
                assert image.getpixel((x, y)) == _rgb(STATUS_COLORS[status]), (key, status, (x, y))


def test_the_stand_in_network_tells_an_unused_connection_from_a_late_request():
    recorder = _Recorder()
    port = recorder.sock.getsockname()[1]
    try:
        socket.create_connection(("127.0.0.1", port)).close()  # a preconnect, closed unused
        late = socket.create_connection(("127.0.0.1", port))
        threading.Event().wait(1.5)  # longer than one read's timeout: the request comes late
        late.sendall(b"GET http://example.invalid/x HTTP/1.1\r\nHost: example.invalid\r\n\r\n")
        idle = socket.create_connection(("127.0.0.1", port))  # open, never used, until the end
        late.close()
    finally:
        recorder.close()
        idle.close()
    assert recorder.requests == ["GET http://example.invalid/x HTTP/1.1"]
    assert recorder.unused_connections == 2
