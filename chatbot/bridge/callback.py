"""Kakao callback delivery: which URLs the bridge may POST a reply to, and the POST itself.

Why so strict: ``userRequest.callbackUrl`` comes from the request body, so whoever can reach the skill endpoint
chooses where the bridge sends the bot's reply (server-side request forgery: ``http://127.0.0.1:<port>/admin``,
a cloud metadata address, a router on the LAN). Three rules (gen.yaml ``bridge:``):

1. ``callback_hosts`` — the URL's host must match a pattern: an exact name, ``*.example.com`` (any subdomain of
   example.com, not example.com itself) or ``*`` (any host). Default ``["*.kakao.com"]``: Kakao i Open Builder
   sends callback URLs on ``https://bot-api.kakao.com/...``.
2. ``callback_allow_private`` (default false) — every address the host resolves to must be public: loopback,
   private (RFC 1918, ULA), shared (100.64/10), link-local (incl. 169.254.169.254), multicast, reserved and
   unspecified addresses are refused, also when wrapped in IPv6 (``::ffff:a.b.c.d``, 6to4). The connection then
   goes to the very address that was checked (no second DNS lookup that could answer differently: DNS
   rebinding); TLS still verifies the certificate for the host name.
3. ``callback_timeout_s`` — one total deadline for DNS, connect, TLS, sending and the response. A per-operation
   socket timeout is not enough: a server that answers one byte at a time never lets a single read time out.
   A watchdog shuts the socket down at the deadline, which wakes any blocked read or write.

No redirects are followed and nothing is retried: a Kakao callback URL is single-use.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
import urllib.parse

KAKAO_CALLBACK_HOSTS = ["*.kakao.com"]

_getaddrinfo = socket.getaddrinfo  # tests replace it to play a hostile DNS server


class CallbackRefused(Exception):
    """The URL's host resolves to an address the policy refuses. The message never contains the URL."""


def host_allowed(host: str, patterns: list[str]) -> bool:
    """``host`` matches one of ``patterns`` (exact, ``*.suffix`` or ``*``); case and a trailing dot ignored."""
    host = (host or "").lower().rstrip(".")
    if not host:
        return False
    for pattern in patterns:
        p = pattern.strip().lower().rstrip(".").strip("[]")  # "[::1]" as in a URL
        if p == "*" or p == host or (p.startswith("*.") and host.endswith(p[1:]) and len(host) > len(p) - 1):
            return True
    return False


def address_public(addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A globally routable unicast address (see the module docstring for what is refused)."""
    ip = ipaddress.ip_address(addr.split("%", 1)[0] if isinstance(addr, str) else addr)
    if ip.version == 6:
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and not address_public(embedded):
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local)


def url_problem(url: str, hosts: list[str], allow_private: bool) -> str | None:
    """Why the bridge will not POST to ``url`` as far as it can tell without DNS (None = go on). Names the
    setting to change, never the URL."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if not host_allowed(host, hosts):
        return "userRequest.callbackUrl host is not in bridge.callback_hosts"
    if not allow_private:
        try:
            literal = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return None  # a name: checked after resolution, when the reply is POSTed
        if not address_public(literal):
            return "userRequest.callbackUrl is not a public address (bridge.callback_allow_private)"
    return None


def _resolve(host: str, port: int, timeout: float) -> list[tuple]:
    """getaddrinfo with a deadline (it has none of its own): the lookup runs on a daemon thread."""
    box: dict[str, object] = {}

    def lookup() -> None:
        try:
            box["ok"] = _getaddrinfo(host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        except OSError as exc:
            box["err"] = exc

    t = threading.Thread(target=lookup, name="bridge-callback-dns", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError("callback host lookup timed out")
    if "err" in box:
        raise box["err"]  # type: ignore[misc]
    return box["ok"]  # type: ignore[return-value]


def _pick(infos: list[tuple], allow_private: bool) -> tuple:
    if not infos:
        raise OSError("callback host has no address")
    if not allow_private and not all(address_public(info[4][0]) for info in infos):
        raise CallbackRefused("callback host resolves to a non-public address (bridge.callback_allow_private)")
    return infos[0]


class _Watchdog:
    """Shuts the connection's socket down at the deadline (a duplicate descriptor of the same socket, so it
    works whichever object — plain or TLS — the connection holds at that moment)."""

    def __init__(self, seconds: float):
        self.fired = threading.Event()
        self._lock = threading.Lock()
        self._dup: socket.socket | None = None
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._dup = sock.dup()
            if self.fired.is_set():
                self._shutdown()

    def _shutdown(self) -> None:
        try:
            self._dup.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        except OSError:
            pass

    def _fire(self) -> None:
        with self._lock:
            self.fired.set()
            if self._dup is not None:
                self._shutdown()

    def __enter__(self) -> "_Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        with self._lock:
            if self._dup is not None:
                self._dup.close()


def post_json(url: str, payload: dict, *, timeout: float, allow_private: bool = False) -> int:
    """POST ``payload`` as JSON once to ``url``, all within ``timeout`` seconds. Returns the HTTP status.

    Raises CallbackRefused (address policy), TimeoutError (deadline), OSError / http.client.HTTPException
    (network trouble).
    """
    deadline = time.monotonic() + timeout
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    family, socktype, proto, _, address = _pick(_resolve(host, port, timeout), allow_private)
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("callback deadline passed")
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    with _Watchdog(left) as dog:
        def connect(_address, timeout=None, source_address=None) -> socket.socket:
            # http.client's hook: connect to the checked address, never the name again
            sock = socket.socket(family, socktype, proto)
            try:
                dog.watch(sock)
                sock.settimeout(left)
                sock.connect(address)
            except BaseException:
                sock.close()
                raise
            return sock

        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=left, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=left)
        conn._create_connection = connect  # type: ignore[attr-defined]
        path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json; charset=utf-8"})
            resp = conn.getresponse()
            resp.read(65536)
            return resp.status
        except (OSError, http.client.HTTPException):
            if dog.fired.is_set():
                raise TimeoutError("callback deadline passed") from None
            raise
        finally:
            conn.close()
