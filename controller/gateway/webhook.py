"""Camera webhooks: a small HTTP endpoint on loopback or the cabinet LAN.

Cameras that cannot publish MQTT call a URL when their analytics fire.
``Webhook`` serves one thread, one request at a time, with a 2 s socket
timeout (a slow or silent client cannot hold it), and hands each good
report to the camera feed (controller/gateway/cameras.py), whose queue the
scan loop drains: the loop never waits for HTTP.

    POST /cam/<camera>/<kind>      body: 1 / 0 / {"active": true}
    GET  /cam/<camera>/<kind>?active=1

The shared secret comes in the ``X-Cabguard-Secret`` header or, for a
camera that can only be given a URL, as ``?secret=``; it is compared in
constant time.  Answers: 204 taken, 400 unreadable payload, 401 wrong or
missing secret, 404 unknown camera or kind, 413 body over 1 KiB.

It listens only on a loopback or private (RFC 1918 / RFC 4193) address:
a wildcard or public address is a config problem (``listen_problem``).
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from controller.gateway.cameras import MAX_PAYLOAD, REPORT_KINDS, CameraFeed, ReportError, parse_active

if TYPE_CHECKING:     # http.server is loaded by a site with webhook cameras only
    from http.server import BaseHTTPRequestHandler

SECRET_HEADER = "X-Cabguard-Secret"


def listen_problem(host: str) -> str | None:
    """Why ``host`` must not be listened on, or None."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return "listen address {!r}: want an IP address (loopback or the cabinet LAN's), not a name".format(host)
    if addr.is_unspecified or not (addr.is_loopback or addr.is_private) or addr.is_link_local:
        return ("listen address {}: the webhook listens on loopback (127.0.0.1) or a private LAN "
                "address only, never a wildcard or public one".format(host))
    return None


class Webhook:
    def __init__(self, host: str, port: int, secret: str, feed: CameraFeed):
        from http.server import BaseHTTPRequestHandler, HTTPServer
        self.feed = feed
        self.secret = secret.encode()
        self.taken = 0
        self.refused = 0
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 2.0
            server_version = "cabguard"
            sys_version = ""

            def do_POST(self) -> None:
                webhook._handle(self)

            def do_GET(self) -> None:
                webhook._handle(self)

            def log_message(self, fmt: str, *args) -> None:   # no stderr line per camera event
                pass

        self.server = HTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="webhook", daemon=True)

    def start(self) -> "Webhook":
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()

    def _answer(self, req: BaseHTTPRequestHandler, code: int, why: str = "") -> None:
        if code != 204:
            self.refused += 1
        body = (why + "\n").encode() if why else b""
        req.send_response(code)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if body:
            req.wfile.write(body)

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        url = urlsplit(req.path)
        query = parse_qs(url.query)
        given = (req.headers.get(SECRET_HEADER) or (query.get("secret") or [""])[0]).encode()
        if not hmac.compare_digest(given, self.secret):
            return self._answer(req, 401, "wrong or missing secret")
        parts = url.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "cam" or parts[1] not in self.feed.cameras or parts[2] not in REPORT_KINDS:
            return self._answer(req, 404, "want /cam/<camera>/<{}>".format("|".join(REPORT_KINDS)))
        length = int(req.headers.get("Content-Length") or 0)
        if length > MAX_PAYLOAD or length < 0:
            return self._answer(req, 413, "body over {} bytes".format(MAX_PAYLOAD))
        payload = req.rfile.read(length) if length else (query.get("active") or ["1"])[0].encode()
        try:
            active = parse_active(payload)
        except ReportError as e:
            return self._answer(req, 400, str(e))
        self.feed.report(parts[1], parts[2], active)
        self.taken += 1
        return self._answer(req, 204)
