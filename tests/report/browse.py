"""Opens pages in headless Chromium through the DevTools protocol and reports, per page, every
network request it made, every console error or uncaught exception, and a screenshot.

Usage: python browse.py OUT_DIR URL...   (prints one JSON list on stdout)
Needs Debian's `chromium` (or $CHROMIUM) and the `websocket-client` package.
"""
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from websocket import create_connection

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


class Cdp:
    def __init__(self, url):
        self.ws = create_connection(url, timeout=60)
        self.next_id = 0
        self.events = []

    def send(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(e.get("method") == method for e in self.events):
                return
            self.ws.settimeout(max(0.05, deadline - time.time()))
            try:
                self.events.append(json.loads(self.ws.recv()))
            except Exception:
                pass
        raise RuntimeError(f"no {method} within {timeout} s")

    def drain(self, seconds):
        """Collects the events that arrive within `seconds` (late requests, console output)."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            self.ws.settimeout(max(0.05, deadline - time.time()))
            try:
                self.events.append(json.loads(self.ws.recv()))
            except Exception:
                pass
        self.ws.settimeout(60)


def main():
    out_dir, urls = sys.argv[1], sys.argv[2:]
    profile = tempfile.mkdtemp(prefix="cc-chromium-")
    proc = subprocess.Popen(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-default-apps", "--hide-scrollbars",
            f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ws_url = None
        for line in proc.stderr:
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                ws_url = m.group(1)
                break
        if not ws_url:
            raise RuntimeError("chromium did not start its DevTools endpoint")
        # Keep reading stderr so that chromium never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
        cdp = Cdp(ws_url)
        target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ["Page", "Network", "Runtime", "Log"]:
            cdp.send(f"{domain}.enable", session=s)
        cdp.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=s,
        )
        results = []
        for i, url in enumerate(urls):
            cdp.events.clear()
            cdp.send("Page.navigate", {"url": url}, session=s)
            cdp.wait_for("Page.loadEventFired", 60)
            cdp.drain(0.5)
            ev = [e for e in cdp.events if e.get("sessionId") in (None, s)]
            requests = [
                e["params"]["request"]["url"]
                for e in ev
                if e.get("method") == "Network.requestWillBeSent"
            ]
            # The page itself is the one load we expect; data: URIs are not requests.
            external = [u for u in requests if u != url and not u.startswith("data:")]
            errors = []
            for e in ev:
                m, p = e.get("method"), e.get("params", {})
                if m == "Runtime.exceptionThrown":
                    errors.append(p["exceptionDetails"].get("text", "exception"))
                elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                    errors.append(" ".join(str(a.get("value", "")) for a in p.get("args", [])))
                elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                    errors.append(p["entry"].get("text", ""))
            shot = cdp.send("Page.captureScreenshot", {"format": "png"}, session=s)
            path = os.path.join(out_dir, f"page{i}.png")
            with open(path, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
            results.append(
                {"url": url, "requests": external, "errors": errors, "screenshot": path}
            )
        print(json.dumps(results))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
