"""An HTTP proxy in front of the GCS emulator that can fail requests and demand a token.

Clients (gcsfs in the driver and in every worker) reach the emulator through it by
``STORAGE_EMULATOR_HOST``; the test switches it between passing requests on, answering 503 as an
overloaded GCS does (for the next N requests, for a while, or until told otherwise), and
refusing requests without ``Authorization: Bearer <token>``. It also answers OAuth token requests
(a service account's ``token_uri``) with that token, so real Google credentials code runs.

It passes multipart uploads on as media uploads (the same object, name and content type, JSON
stored as application/octet-stream, which the emulator's media path would parse):
gcsfs frames a multipart body with bare LFs, and the emulator's parser (Python's email parser)
takes a CR that ends the content as part of the delimiter and drops it, so one chunk in 256
would be stored a byte short (sczarr's MD5 check on uploads refuses such a write).
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length", "host"}
TOKEN_PATH = "/token"
UPSTREAM_CONNECTIONS = 4
"""Requests passed on at once: the emulator serves one at a time from a listen backlog of 5, and a
connection past it waits for a resent SYN (1 s, then 3 s) instead of its turn."""
BOUNDARY = re.compile(r'boundary="?([^";]+)"?')


def as_media_upload(path: str, headers: dict[str, str], body: bytes) -> tuple[str, dict[str, str], bytes]:
    """A ``multipart/related`` upload (JSON metadata, then the content) as the equivalent
    ``uploadType=media`` request. The line break before ``--boundary`` belongs to the delimiter;
    it is the one the body is framed with (gcsfs: LF), so a CR that ends the content stays."""
    content_type = next(v for k, v in headers.items() if k.lower() == "content-type")
    delimiter = b"--" + BOUNDARY.search(content_type).group(1).encode()
    parts = body.split(delimiter)[1:-1]  # preamble and the closing "--" are not parts
    metadata, content = (_part(p) for p in parts)
    url = urlsplit(path)
    query = {**dict(parse_qsl(url.query)), "uploadType": "media", "name": json.loads(metadata[1])["name"]}
    media_headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    content_kind = content[0].get("content-type", "application/octet-stream")
    # the emulator reads an application/json media body as object metadata and drops the connection
    # on a large one (a store's consolidated zarr.json): the bytes are stored as they are either way
    media_headers["Content-Type"] = "application/octet-stream" if content_kind.startswith("application/json") \
        else content_kind
    return f"{url.path}?{urlencode(query)}", media_headers, content[1]


def _part(raw: bytes) -> tuple[dict[str, str], bytes]:
    newline = b"\r\n" if raw.startswith(b"\r\n") else b"\n"  # how this body frames its lines
    head, _, content = raw[len(newline):].partition(newline * 2)
    content = content[: -len(newline)] if content.endswith(newline) else content
    fields = dict(line.split(":", 1) for line in head.decode().splitlines() if ":" in line)
    return {k.strip().lower(): v.strip() for k, v in fields.items()}, content


class _QuietServer(ThreadingHTTPServer):
    request_queue_size = 256
    """Concurrent clients (a commit's writes go out together) queue here, not in dropped SYNs
    that the client's TCP resends a second later (``socketserver``'s backlog is 5)."""

    def handle_error(self, request, client_address) -> None:
        """A client that goes away mid-request (a killed worker or driver) is expected here."""


class GCSProxy:
    """A threaded proxy on loopback; ``url`` is what ``STORAGE_EMULATOR_HOST`` points at.

    ``latency`` (seconds added to every request) and ``bandwidth`` (bytes per second of response
    bodies, shared by all of this proxy's connections) give the emulator a cloud bucket's shape:
    one proxy per Dask worker is a bandwidth cap per worker."""

    def __init__(self, upstream: str, latency: float = 0.0, bandwidth: float | None = None):
        self.upstream = urlsplit(upstream)
        self.latency, self.bandwidth = latency, bandwidth
        self._next_free = 0.0  # when the capped link is free again
        self._lock = threading.Lock()
        self._upstream_slots = threading.BoundedSemaphore(UPSTREAM_CONNECTIONS)
        self._fail_next = 0
        self._fail_until = 0.0
        self._down = False
        self.corrupt_md5 = False  # answer uploads with a wrong md5Hash (what a corrupted upload looks like)
        self._open = threading.Event()  # cleared by hold(): requests wait, unanswered, until release()
        self._open.set()
        self.token: str | None = None
        self.requests = 0
        self.failed: list[str] = []
        self.unauthorized: list[str] = []
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "GCSProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---- what the test switches ----------------------------------------------------------------

    def fail(self, n: int) -> None:
        """Answer the next ``n`` storage requests with 503."""
        with self._lock:
            self._fail_next = n

    def outage(self, seconds: float) -> None:
        """Answer every storage request with 503 for ``seconds`` from now."""
        with self._lock:
            self._fail_until = time.monotonic() + seconds

    def down(self) -> None:
        with self._lock:
            self._down = True

    def up(self) -> None:
        with self._lock:
            self._down, self._fail_next, self._fail_until = False, 0, 0.0

    def hold(self) -> None:
        """Keep every storage request waiting (not failing) until ``release``: the work in flight
        stays in flight, so a test can act while tasks are known to be running."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def require_token(self, token: str) -> None:
        """Refuse (401) storage requests that do not carry ``token``; issue it at ``/token``."""
        self.token = token

    # ---- serving --------------------------------------------------------------------------------

    def _throttle(self, n_bytes: int) -> None:
        """Sleep as long as ``n_bytes`` take on the capped link (a queue shared by the connections)."""
        if not self.bandwidth:
            return
        with self._lock:
            start = max(time.monotonic(), self._next_free)
            self._next_free = start + n_bytes / self.bandwidth
            done = self._next_free
        time.sleep(max(0.0, done - time.monotonic()))

    def _should_fail(self, path: str) -> bool:
        with self._lock:
            self.requests += 1
            failing = self._down or time.monotonic() < self._fail_until or self._fail_next > 0
            if self._fail_next > 0:
                self._fail_next -= 1
            if failing:
                self.failed.append(path)
            return failing

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as gcsfs expects of GCS
            disable_nagle_algorithm = True  # headers and body go out as two writes: no delayed-ACK stalls

            def log_message(self, *args) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {"Content-Type": "application/json"}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    piece = 1 << 16
                    for at in range(0, len(payload), piece):
                        proxy._throttle(len(payload[at : at + piece]))
                        self.wfile.write(payload[at : at + piece])

            def _error(self, status: int, message: str) -> None:
                self._reply(status, json.dumps({"error": {"code": status, "message": message,
                                                          "errors": [{"message": message}]}}).encode())

            def _handle(self) -> None:
                body = self._body()
                if self.path.startswith(TOKEN_PATH) and proxy.token is not None:
                    return self._reply(200, json.dumps({"access_token": proxy.token, "expires_in": 3600,
                                                        "token_type": "Bearer"}).encode())
                if proxy.token is not None and self.headers.get("Authorization") != f"Bearer {proxy.token}":
                    proxy.unauthorized.append(self.path)  # GCS's words for a request without a valid token
                    return self._error(401, "Anonymous caller does not have storage.objects.get access")
                if proxy._should_fail(self.path):
                    return self._error(503, "Service Unavailable (the test's proxy is failing requests)")
                proxy._open.wait()
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                if proxy.latency:
                    time.sleep(proxy.latency)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                path = self.path
                if self.command == "POST" and "uploadType=multipart" in path:
                    path, headers, body = as_media_upload(path, headers, body)
                with proxy._upstream_slots:
                    upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                    upstream.request(self.command, path, headers=headers,
                                     body=body if body or self.command in ("POST", "PUT") else None)
                    response = upstream.getresponse()
                    payload = response.read()
                out = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
                if "Location" in out:  # resumable uploads continue through the proxy too
                    emulator = f"{proxy.upstream.scheme}://{proxy.upstream.netloc}"
                    out["Location"] = out["Location"].replace(emulator, proxy.url)
                upstream.close()
                if proxy.corrupt_md5 and self.command in ("POST", "PUT") and b'"md5Hash"' in payload:
                    document = json.loads(payload)
                    document["md5Hash"] = base64.b64encode(b"\x00" * 16).decode()
                    payload = json.dumps(document).encode()
                    out = {k: v for k, v in out.items() if k.lower() != "content-length"}
                self._reply(response.status, payload, out)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        return Handler
