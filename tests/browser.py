"""Open a page in a real headless Chromium over the DevTools protocol: images loaded, console errors seen."""

from __future__ import annotations

import json
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-port=0",
         "--remote-allow-origins=*")
IMAGES_JS = ("JSON.stringify(Array.from(document.images).map(i => ({src: i.src.slice(0, 40), complete: i.complete, "
             "width: i.naturalWidth})))")


def skip_reason() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (Debian: apt-get install -y chromium; .ci/run installs it)"
    try:
        import websocket  # noqa: F401
    except ImportError:
        return "websocket-client is not installed (pip install -e '.[test]')"
    return None


def check_page(path: Path, timeout: float = 60.0) -> dict:
    """Load `path` in headless Chromium; return {images: [...], errors: [...]} after the load event."""
    import websocket

    profile = tempfile.mkdtemp(prefix="selfinstruct-chromium-")
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        port = None
        while port is None:  # Chromium prints "DevTools listening on ws://127.0.0.1:PORT/..." once it is up
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            port = m and int(m.group(1))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as r:
            target = next(t for t in json.load(r) if t["type"] == "page")
        ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
        ids = iter(range(1, 10**6))
        errors: list[str] = []

        def send(method: str, **params) -> int:
            n = next(ids)
            ws.send(json.dumps({"id": n, "method": method, "params": params}))
            return n

        def until(pred) -> dict:
            while True:
                ws.settimeout(max(0.1, deadline - time.monotonic()))
                msg = json.loads(ws.recv())
                method, p = msg.get("method"), msg.get("params", {})
                if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                    errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
                elif method == "Runtime.exceptionThrown":
                    errors.append("exception: " + p["exceptionDetails"].get("text", ""))
                elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                    errors.append("log: " + p["entry"].get("text", ""))
                if pred(msg):
                    return msg

        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            n = send(method)
            until(lambda m, n=n: m.get("id") == n)
        send("Page.navigate", url=path.resolve().as_uri())
        until(lambda m: m.get("method") == "Page.loadEventFired")
        n = send("Runtime.evaluate", expression=IMAGES_JS, returnByValue=True)
        images = json.loads(until(lambda m: m.get("id") == n)["result"]["result"]["value"])
        n = send("Runtime.evaluate", expression="1")  # a round trip: console events of the load arrive first
        until(lambda m: m.get("id") == n)
        ws.close()
        return {"images": images, "errors": errors}
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(path: Path, out: Path, width: int = 1200, height: int = 6000) -> None:
    """A full-length PNG of the page (for looking at it, not for asserting)."""
    profile = tempfile.mkdtemp(prefix="selfinstruct-chromium-")
    try:
        subprocess.run([CHROMIUM, *FLAGS[:-2], f"--user-data-dir={profile}", "--hide-scrollbars",
                        f"--window-size={width},{height}", f"--screenshot={out}", path.resolve().as_uri()],
                       capture_output=True, timeout=120, check=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
