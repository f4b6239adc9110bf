"""The web console in a real browser: headless Chromium (Debian chromium +
chromium-driver) driven by Selenium against a daemon the test starts. Values
are written by the Deno CLI; the console must show them as Deno.inspect does.
Screenshots go to Tests/e2e/artifacts/ (git-ignored)."""
import asyncio
import base64
import http.client
import http.server
import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from datetime import datetime, timedelta, timezone
from denokv import open_kv
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import DENO, ROOT, TOKEN, Daemon, run_deno

ARTIFACTS = ROOT / "Tests/e2e/artifacts"
RO_TOKEN = "e2e-read-only-token-0123456789"
DENO_VALUES = ROOT / "Tests/e2e/deno/console_values.ts"


@pytest.fixture(scope="module")
def console_daemon(tmp_path_factory):
    work = tmp_path_factory.mktemp("console")
    (work / "ro-token").write_text(RO_TOKEN)
    d = Daemon(work / "daemon", extra_args=["--read-only-access-token-file", str(work / "ro-token")]).start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1100,720", "--force-device-scale-factor=1", "--no-first-run",
              "--disable-background-networking", "--disable-component-update"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def shot(driver, name, selector=None):
    """Screenshot of the window, scrolled to the top or to `selector`."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if selector:
        driver.execute_script("document.querySelector(arguments[0]).scrollIntoView()", selector)
    else:
        driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(ARTIFACTS / f"console-{name}.png"))


def wait(driver, cond, timeout=15, what=""):
    """Until cond is truthy; elements replaced by a re-render meanwhile are looked up again."""
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,
                                                              NoSuchElementException)).until(lambda d: cond(d), what)


def click(driver, find, what=""):
    """Clicks what `find` returns, retrying while the page re-renders it."""
    def attempt(d):
        e = find(d)
        if not e:
            return False
        e.click()
        return True
    wait(driver, attempt, what=what)


def message_after(driver, action):
    """Clears the status line, runs action, returns the next status text."""
    driver.execute_script('document.getElementById("message").textContent = ""')
    action()
    return wait(driver, lambda d: d.find_element(By.ID, "message").text, what="status message")


def row(driver, text):
    return next((tr for tr in driver.find_elements(By.CSS_SELECTOR, "#entries tbody tr") if text in tr.text), None)


def visible(driver, id_):
    els = driver.find_elements(By.ID, id_)
    return els[0] if els and els[0].is_displayed() else None


def sign_in(driver, daemon, token=TOKEN):
    driver.delete_all_cookies()
    driver.get(daemon.url + "/console/")
    wait(driver, lambda d: visible(d, "token"), what="sign-in form")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin").click()
    wait(driver, lambda d: visible(d, "nav"), what="signed in")


def open_prefix(driver, *parts):
    """Clicks through key-part links from the root: parts are their texts."""
    click(driver, lambda d: d.find_element(By.CSS_SELECTOR, '#breadcrumbs a[data-prefix=""]'))
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#breadcrumbs a")) == 1)
    for i, p in enumerate(parts):
        click(driver, lambda d: next((a for a in d.find_elements(By.CSS_SELECTOR, "#entries td.key a")
                                      if a.text == p), None), what=f"link {p}")
        wait(driver, lambda d: [a.text for a in d.find_elements(By.CSS_SELECTOR, "#breadcrumbs a")][1:] == list(parts[:i + 1]))


def go_prefix(driver, *parts):
    """Opens the prefix of string parts directly (as a bookmark would), not by
    clicking through listings that may be longer than a page."""
    raw = b"".join(b"\x02" + p.encode() + b"\x00" for p in parts)
    prefix = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    driver.execute_script("goPrefix(arguments[0])", prefix)
    wait(driver, lambda d: [a.text for a in d.find_elements(By.CSS_SELECTOR, "#breadcrumbs a")][1:]
         == [f'"{p}"' for p in parts])


def rows(driver):
    """{key text: (type, value text)} of the listing."""
    out = {}
    for tr in driver.find_elements(By.CSS_SELECTOR, "#entries tbody tr"):
        tds = tr.find_elements(By.TAG_NAME, "td")
        key = "[ " + ", ".join(a.text for a in tds[0].find_elements(By.TAG_NAME, "a")) + " ]"
        out[key] = (tds[1].text, tds[2].get_attribute("textContent"))
    return out


def deno_eval(daemon, code):
    path = daemon.workdir / "snippet.ts"
    path.write_text(f'const kv = await Deno.openKv("{daemon.url}");\n{code}\nkv.close();\n')
    r = run_deno(["run", "-A", "--unstable-kv", str(path)])
    assert r.returncode == 0, r.stderr
    return r.stdout


def api(daemon, path, body=None, headers=None, method=None):
    req = urllib.request.Request(daemon.url + path, data=None if body is None else json.dumps(body).encode(),
                                 headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def compare(shown, group, expected):
    """(name, console text, Deno text) for every value the listing shows differently."""
    mismatches = []
    for name, want in expected.items():
        got = shown.get(f'[ "console", "{group}", "{name}" ]')
        assert got is not None, f"{name} not listed: {list(shown)}"
        # Listings cut long values; the entry view shows them whole (checked below).
        listed = want["compact"] if len(want["compact"]) <= 300 else want["compact"][:300] + "…"
        if got[1] != listed:
            mismatches.append((name, got[1], listed))
        # One-line values are also exactly what plain Deno.inspect prints.
        if "\n" not in want["standard"]:
            assert want["standard"] == want["compact"]
    return mismatches


def test_values_written_by_deno_show_as_deno_inspect_shows_them(console_daemon, browser):
    r = run_deno(["run", "-A", "--unstable-kv", str(DENO_VALUES), console_daemon.url])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    key_text = out["key"]

    sign_in(browser, console_daemon)
    mismatches = []
    for group in ("more", "types"):
        expected = out[group]
        open_prefix(browser, '"console"', f'"{group}"')
        wait(browser, lambda d: len(rows(d)) == len(expected), what=f"all {group} values listed")
        mismatches += compare(rows(browser), group, expected)
    assert not mismatches, "\n".join(f"{n}: console {c!r} != Deno {d!r}" for n, c, d in mismatches)
    shown = rows(browser)
    assert shown['[ "console", "types", "u64" ]'][0] == "Deno.KvU64"
    assert shown['[ "console", "types", "map" ]'][0] == "Map"
    expected = out["types"]

    click(browser, lambda d: row(d, '"long"'))
    wait(browser, lambda d: d.find_element(By.ID, "entry-text").text == expected["long"]["compact"], what="whole long value")

    # Entry view of a Map: type, versionstamp, the raw bytes.
    click(browser, lambda d: row(d, '"map"'))
    wait(browser, lambda d: d.find_element(By.ID, "entry-text").text == expected["map"]["compact"])
    assert re.fullmatch(r"[0-9a-f]{20}", browser.find_element(By.ID, "entry-versionstamp").text)
    browser.find_element(By.ID, "raw-toggle").click()
    assert browser.find_element(By.ID, "raw").text.startswith("encoding: v8\nff")
    shot(browser, "browse")

    # Key parts keep their types.
    open_prefix(browser, '"console"', '"keys"')
    wait(browser, lambda d: len(rows(d)) == 1)
    (k,) = rows(browser).keys()
    assert k == key_text
    types = [s.text for s in browser.find_elements(By.CSS_SELECTOR, "#entries td.key .part-type")]
    assert types == ["string", "string", "string", "number", "bigint", "boolean", "bytes"]


def test_edit_with_conflict_live_update_delete_and_delete_prefix(console_daemon, browser):
    deno_eval(console_daemon, 'await kv.set(["console", "edit", "k"], "v1");'
                              'for (const i of [1, 2, 3]) await kv.set(["console", "bulk", i], { i });')
    sign_in(browser, console_daemon)
    go_prefix(browser, "console", "edit")
    wait(browser, lambda d: visible(d, "live-status") and "on" in d.find_element(By.ID, "live-status").get_attribute("class"),
         what="live view connected")
    click(browser, lambda d: row(d, '"k"'))
    wait(browser, lambda d: d.find_element(By.ID, "editor-value").get_attribute("value") == "v1")
    assert browser.find_element(By.ID, "editor-type").get_attribute("value") == "string"
    editor = browser.find_element(By.ID, "editor-value")
    editor.clear()
    editor.send_keys("mine")

    # Someone else (the Deno CLI) changes the key: the live view shows it.
    deno_eval(console_daemon, 'await kv.set(["console", "edit", "k"], "theirs");')
    wait(browser, lambda d: '"theirs"' in [v for _, v in rows(d).values()], what="live update of the listing")
    assert browser.find_element(By.ID, "editor-value").get_attribute("value") == "mine", "an edit in progress is kept"
    browser.find_element(By.ID, "save").click()
    msg = wait(browser, lambda d: d.find_element(By.ID, "message").text if "Not saved" in d.find_element(By.ID, "message").text else None)
    assert "changed meanwhile" in msg and '"theirs"' in msg
    shot(browser, "conflict")
    assert '"theirs"' in deno_eval(console_daemon, 'console.log(JSON.stringify((await kv.get(["console", "edit", "k"])).value));')

    # The editor now holds the new value; saving again works.
    wait(browser, lambda d: d.find_element(By.ID, "editor-value").get_attribute("value") == "theirs")
    editor = browser.find_element(By.ID, "editor-value")
    editor.clear()
    editor.send_keys("42")
    Select(browser.find_element(By.ID, "editor-type")).select_by_value("number")
    msg = message_after(browser, lambda: browser.find_element(By.ID, "save").click())
    assert msg.startswith("Saved"), msg
    out = deno_eval(console_daemon, 'const e = await kv.get(["console", "edit", "k"]); console.log(typeof e.value, e.value);')
    assert out.strip() == "number 42"

    wait(browser, lambda d: d.find_element(By.ID, "entry-text").text == "42")
    browser.find_element(By.ID, "delete").click()
    wait(browser, lambda d: d.find_element(By.ID, "message").text.startswith("Deleted"))
    assert deno_eval(console_daemon, 'console.log((await kv.get(["console", "edit", "k"])).versionstamp);').strip() == "null"

    # Pages of 50 with a cursor ("Load more").
    deno_eval(console_daemon, 'for (let i = 0; i < 60; i += 10) { const op = kv.atomic();'
                              ' for (let j = i; j < i + 10; j++) op.set(["console", "page", j], j); await op.commit(); }')
    go_prefix(browser, "console", "page")
    wait(browser, lambda d: len(rows(d)) == 50 and visible(d, "load-more"))
    browser.find_element(By.ID, "load-more").click()
    wait(browser, lambda d: len(rows(d)) == 60 and not visible(d, "load-more"))
    assert [v for _, v in rows(browser).values()] == [str(i) for i in range(60)]

    # Delete a prefix after a confirmation that shows the count.
    go_prefix(browser, "console", "bulk")
    wait(browser, lambda d: len(rows(d)) == 3)
    browser.find_element(By.ID, "delete-prefix").click()
    confirm = wait(browser, lambda d: visible(d, "confirm-panel"))
    assert "Delete 3 keys under" in confirm.text
    shot(browser, "delete-prefix")
    browser.find_element(By.ID, "confirm-delete-prefix").click()
    wait(browser, lambda d: d.find_element(By.ID, "message").text == "Deleted 3 keys.")
    wait(browser, lambda d: visible(d, "empty"))
    assert deno_eval(console_daemon, 'let n = 0; for await (const _ of kv.list({ prefix: ["console", "bulk"] })) n++; console.log(n);').strip() == "0"


def test_new_key_from_the_console_wakes_a_deno_watcher(console_daemon, browser):
    sign_in(browser, console_daemon)
    path = console_daemon.workdir / "watch.ts"
    path.write_text(f'const kv = await Deno.openKv("{console_daemon.url}");\n'
                    'for await (const [e] of kv.watch([["console", "watched"]])) {\n'
                    '  if (e.value !== null) { console.log(JSON.stringify(e.value)); break; }\n'
                    '  console.log("ready");\n'
                    '}\nkv.close();\n')
    env = dict(os.environ, DENO_KV_ACCESS_TOKEN=TOKEN, NO_COLOR="1", DENO_NO_UPDATE_CHECK="1")
    proc = subprocess.Popen([DENO, "run", "-A", "--unstable-kv", str(path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        browser.find_element(By.ID, "new-key").click()
        key = wait(browser, lambda d: visible(d, "editor-key"))
        key.clear()
        key.send_keys('["console", "watched"]')
        Select(browser.find_element(By.ID, "editor-type")).select_by_value("json")
        browser.find_element(By.ID, "editor-value").send_keys('{"from": "console", "n": [1, 2]}')
        msg = message_after(browser, lambda: browser.find_element(By.ID, "save").click())
        assert msg.startswith("Saved"), msg
        assert json.loads(proc.stdout.readline()) == {"from": "console", "n": [1, 2]}
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_read_only_token_gives_a_read_only_console(console_daemon, browser):
    deno_eval(console_daemon, 'await kv.set(["console", "ro"], "keep");')
    sign_in(browser, console_daemon, token=RO_TOKEN)
    assert visible(browser, "ro-badge")
    go_prefix(browser, "console", "ro")
    click(browser, lambda d: row(d, '"ro"'))
    wait(browser, lambda d: d.find_element(By.ID, "entry-text").text == '"keep"')
    for id_ in ("editor", "new-key", "delete-prefix", "save", "delete"):
        assert not visible(browser, id_), f"{id_} shown to a read-only session"
    # Even a request made from the signed-in page itself (with the CSRF token) is refused.
    status = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch("api/set", {method: "POST", credentials: "same-origin",
            headers: {"content-type": "application/json", "x-csrf-token": state.csrf},
            body: JSON.stringify({db: state.db, keyJson: '["console", "ro"]', type: "string", value: "changed", expect: null})})
          .then(async r => done(r.status + " " + await r.text()));""")
    assert status.startswith("403") and "read-only" in status
    assert deno_eval(console_daemon, 'console.log((await kv.get(["console", "ro"])).value);').strip() == "keep"
    shot(browser, "read-only")


class _EvilSite(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self):
        page = f"""<!doctype html><body>
<form id="f" method="POST" action="{self.target}/console/api/set" enctype="text/plain">
<input name='{{"keyJson":"[\\"pwned\\"]","type":"string","value":"x","expect":null,"pad":"' value='"}}'>
</form>
<script>
fetch("{self.target}/console/api/set", {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"content-type": "text/plain"}},
  body: JSON.stringify({{keyJson: '["pwned", 2]', type: "string", value: "x", expect: null}})}})
  .finally(() => document.getElementById("f").submit());
</script></body>"""
        body = page.encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_forged_cross_site_requests_are_rejected(console_daemon, browser):
    sign_in(browser, console_daemon)
    _EvilSite.target = console_daemon.url
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EvilSite)
    t = threading.Thread(target=evil.serve_forever, daemon=True)
    t.start()
    try:
        # "localhost" is another site than "127.0.0.1" for the browser.
        browser.get(f"http://localhost:{evil.server_address[1]}/")
        wait(browser, lambda d: "/console/api/set" in d.current_url, what="forged form submitted")
        assert "cross-site request refused" in browser.find_element(By.TAG_NAME, "body").text \
            or "not signed in" in browser.find_element(By.TAG_NAME, "body").text
    finally:
        evil.shutdown()
        evil.server_close()
    assert deno_eval(console_daemon, 'let n = 0; for await (const _ of kv.list({ prefix: ["pwned"] })) n++; console.log(n);').strip() == "0"

    # With the real session cookie but a foreign Origin, or no CSRF token: 403.
    cookie = next(c for c in browser.get_cookies() if c["name"] == "kvconsole_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    body = {"keyJson": '["pwned"]', "type": "string", "value": "x", "expect": None}
    h = {"cookie": f"kvconsole_session={cookie['value']}", "content-type": "application/json"}
    assert api(console_daemon, "/console/api/set", body, {**h, "origin": "http://evil.example"})[0] == 403
    assert api(console_daemon, "/console/api/set", body, h)[0] == 403
    assert api(console_daemon, "/console/api/set", body, {**h, "content-type": "text/plain", "x-csrf-token": "x"})[0] == 415


def test_sign_out_failed_sign_in_and_headers(console_daemon, browser):
    sign_in(browser, console_daemon)
    cookie = next(c for c in browser.get_cookies() if c["name"] == "kvconsole_session")["value"]
    assert api(console_daemon, "/console/api/session", headers={"cookie": f"kvconsole_session={cookie}"})[0] == 200
    # A live-view stream of this session (read here with http.client) ends with the session.
    conn = http.client.HTTPConnection("127.0.0.1", console_daemon.port, timeout=10)
    conn.request("GET", "/console/api/events?db=default&prefix=", headers={"cookie": f"kvconsole_session={cookie}"})
    stream = conn.getresponse()
    assert stream.status == 200 and stream.getheader("content-type").startswith("text/event-stream")
    while stream.readline().strip() != b"event: ready":
        pass
    browser.find_element(By.ID, "signout").click()
    wait(browser, lambda d: visible(d, "signin-form"))
    assert api(console_daemon, "/console/api/session", headers={"cookie": f"kvconsole_session={cookie}"})[0] == 401
    start = time.monotonic()
    stream.read()  # returns at the end of the stream; a timeout would raise
    assert time.monotonic() - start < 5
    conn.close()

    # A wrong token is refused, late.
    browser.find_element(By.ID, "token").send_keys("not-the-token-000000")
    start = time.monotonic()
    browser.find_element(By.ID, "signin").click()
    wait(browser, lambda d: d.find_element(By.ID, "signin-error").text == "invalid access token")
    assert time.monotonic() - start >= 0.9
    shot(browser, "sign-in")

    status, page, headers = api(console_daemon, "/console/")
    assert status == 200 and "<script>" not in page
    h = {k.lower(): v for k, v in headers.items()}
    assert "default-src 'none'" in h["content-security-policy"] and "frame-ancestors 'none'" in h["content-security-policy"]
    assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
    # Everything the page loads comes from the daemon itself.
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_queue_and_server_tabs(console_daemon, browser):
    # The Deno CLI cannot enqueue over KV Connect; Python's denokv client can.
    async def enqueue():
        kv = await open_kv(console_daemon.url, access_token=TOKEN)
        async with kv:
            await kv.enqueue({"job": 1}, delivery_time=datetime.now(timezone.utc) + timedelta(hours=1))
    asyncio.run(enqueue())
    sign_in(browser, console_daemon)
    browser.find_element(By.ID, "tab-queue").click()
    wait(browser, lambda d: visible(d, "queue-ready") and int(d.find_element(By.ID, "queue-ready").text) >= 1)
    browser.find_element(By.ID, "tab-server").click()
    wait(browser, lambda d: visible(d, "server-version") and d.find_element(By.ID, "server-version").text != "")
    wait(browser, lambda d: d.find_element(By.ID, "chart-rps").find_elements(By.TAG_NAME, "path"), what="chart drawn")
    # Keys in the database, as the storage reports them, match a Deno count.
    n = deno_eval(console_daemon, 'let n = 0; for await (const _ of kv.list({ prefix: [] })) n++; console.log(n);').strip()
    wait(browser, lambda d: d.find_element(By.ID, "server-keys").text == n, timeout=10)
    assert "B" in browser.find_element(By.ID, "server-size").text

    # The numbers are the daemon's own request metrics: 20 health checks show up.
    cookie = next(c for c in browser.get_cookies() if c["name"] == "kvconsole_session")["value"]

    def server():
        status, text, _ = api(console_daemon, "/console/api/server?db=default",
                              headers={"cookie": f"kvconsole_session={cookie}"})
        assert status == 200, text
        return json.loads(text)
    before = server()["requestsTotal"]
    for _ in range(20):
        assert api(console_daemon, "/healthz")[0] == 200
    deadline = time.monotonic() + 10
    while True:
        s = server()
        if s["requestsTotal"] >= before + 20 and any(x["rps"] > 0 for x in s["samples"][-5:]):
            break
        assert time.monotonic() < deadline, s
        time.sleep(0.5)
    time.sleep(2.5)  # a few samples for the chart
    shot(browser, "server")
    shot(browser, "server-charts", "#server-info tr:nth-child(7)")


def test_console_can_be_turned_off_or_moved(tmp_path):
    off = Daemon(tmp_path / "off", extra_args=["--console", "false"]).start()
    try:
        assert api(off, "/console/")[0] == 404
    finally:
        off.stop()
    moved = Daemon(tmp_path / "moved", extra_args=["--console-listen", "127.0.0.1:0"]).start()
    try:
        m = re.search(r"console=http://127\.0\.0\.1:(\d+)/console/", moved.log())
        assert m, moved.log()
        port = int(m.group(1))
        assert port != moved.port
        assert api(moved, "/console/")[0] == 404, "not on the main listener"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/console/", timeout=10) as r:
            assert r.status == 200
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
            raise AssertionError("the console listener answered the data path")
        except urllib.error.HTTPError as e:
            assert e.code == 404
    finally:
        moved.stop()


def test_multi_database_server_opens_the_database_of_the_token(tmp_path, browser):
    work = tmp_path / "multi"
    work.mkdir()
    (work / "app-token").write_text("app-token-0123456789")
    (work / "an-token").write_text("analytics-token-0123456789")
    (work / "databases.yaml").write_text(f"""databases:
  - name: app
    path: {work}/app.sqlite3
    tokens:
      - file: {work}/app-token
  - name: analytics
    path: {work}/analytics.sqlite3
    tokens:
      - file: {work}/an-token
        scope: read-only
""")
    d = Daemon(work / "daemon", extra_args=["--databases-file", str(work / "databases.yaml")]).start()
    try:
        r = run_deno(["eval", "--unstable-kv", f'const kv = await Deno.openKv("{d.url}"); await kv.set(["where"], "analytics"); kv.close();'],
                     token="analytics-token-0123456789")
        assert r.returncode != 0, "the analytics token is read-only"
        r = run_deno(["eval", "--unstable-kv", f'const kv = await Deno.openKv("{d.url}"); await kv.set(["where"], "app"); kv.close();'],
                     token="app-token-0123456789")
        assert r.returncode == 0, r.stderr
        sign_in(browser, d, token="app-token-0123456789")
        options = [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#db-select option")]
        assert options == ["app"]
        wait(browser, lambda d_: rows(d_).get('[ "where" ]', (None, None))[1] == '"app"')
        sign_in(browser, d, token="analytics-token-0123456789")
        assert [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#db-select option")] == ["analytics (read-only)"]
        assert visible(browser, "ro-badge")
        wait(browser, lambda d_: visible(d_, "empty"), what="the analytics database is empty")
    finally:
        d.stop()
