"""The outbound policy: every request Culprit makes on a user's behalf (a replay hook, a model's ``api_base``, litellm's
providers, embeddings) goes through here.

Users choose those URLs, so without a policy a project owner could make the worker reach the deployment's own
network: its admin ports, its database, the cloud metadata service. The policy:

- only ``http`` and ``https``;
- every address the host resolves to must be public: loopback, private, link-local (metadata services live at
  169.254.169.254), shared, multicast, unique-local and reserved addresses are refused, unless the deployment lists
  them in ``CULPRIT_OUTBOUND_ALLOW`` (host names, addresses, CIDRs, each optionally ``:port``);
- loopback is allowed by default in the embedded single-user mode only (``CULPRIT_OUTBOUND_ALLOW_LOOPBACK``), so a
  local Ollama or vLLM works after ``make run``; a team deployment never allows it unless told to;
- the check runs again when the connection is opened, against the very address the socket connects to (the
  connection is pinned to the checked address), so a name that resolves to a public address when the form is saved
  and to 127.0.0.1 a second later (DNS rebinding) still cannot reach loopback; redirects open new connections and
  are checked the same way.

``guarded_client()`` / ``GuardedTransport`` enforce it for httpx; ``install_litellm_guard()`` hands them to litellm.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
from django.conf import settings

SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundRefused(Exception):
    """The policy refuses this destination. The message names the host and the kind of address, never a body."""


@dataclass(frozen=True)
class _Rule:
    """One ``CULPRIT_OUTBOUND_ALLOW`` entry: a host name or a network, on any port or on one."""

    host: str = ""
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None

    def allows(self, host: str, address: IpAddress, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return address in self.network
        return host.lower().rstrip(".") == self.host


def parse_rule(entry: str) -> _Rule:
    """``10.0.0.0/8``, ``ollama``, ``ollama:11434``, ``127.0.0.1:8080``, ``[::1]:11434`` -> a rule."""
    entry = entry.strip().lower()
    host, port = entry, None
    if entry.startswith("["):  # [v6]:port
        host, _, rest = entry[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isascii() and rest[1:].isdigit() else None
    elif entry.count(":") == 1:
        name, _, number = entry.partition(":")
        if number.isascii() and number.isdigit():
            host, port = name, int(number)
    try:
        return _Rule(network=ipaddress.ip_network(host, strict=False), port=port)
    except ValueError:
        return _Rule(host=host.rstrip("."), port=port)


def allow_rules() -> list[_Rule]:
    raw = getattr(settings, "CULPRIT_OUTBOUND_ALLOW", [])
    entries = raw.split(",") if isinstance(raw, str) else raw
    return [parse_rule(e) for e in entries if e and e.strip()]


def address_kind(address: IpAddress) -> str | None:
    """Why an address is not public ("loopback", "private", ...), or None for a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind, flag in (
        ("loopback", address.is_loopback),
        ("link-local or metadata", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
    ):
        if flag:
            return kind
    if isinstance(address, ipaddress.IPv6Address) and address in ipaddress.ip_network("fc00::/7"):
        return "unique-local"
    if not address.is_global:  # RFC 1918, shared 100.64/10 (some clouds' metadata), documentation ranges
        return "private"
    return None


def check_address(host: str, address: IpAddress, port: int) -> None:
    """Refuse one resolved address of ``host`` unless it is public or the deployment allows it."""
    kind = address_kind(address)
    if kind is None or any(rule.allows(host, address, port) for rule in allow_rules()):
        return
    if kind == "loopback" and getattr(settings, "CULPRIT_OUTBOUND_ALLOW_LOOPBACK", False):
        return
    raise OutboundRefused(
        f"{host} is a {kind} address ({address}); the deployment does not allow it (CULPRIT_OUTBOUND_ALLOW)"
    )


def resolve(host: str, port: int) -> list[IpAddress]:
    """Every address ``host`` resolves to (a literal address is itself); OSError when it does not resolve."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))


def checked_addresses(host: str, port: int) -> list[IpAddress]:
    """The addresses to connect to; every one of them is checked, so one bad record refuses the host."""
    addresses = resolve(host, port)
    for address in addresses:
        check_address(host, address, port)
    return addresses


def check_scheme(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL; OutboundRefused for any other scheme or a URL without a host."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise OutboundRefused("only http:// and https:// URLs with a host are allowed")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise OutboundRefused("the URL's port is not a number between 0 and 65535") from None
    return parts.hostname, port


def check_url(url: str) -> None:
    """Check a URL before it is saved or used. A host that does not resolve now passes (it may resolve where the
    worker runs); the check at connect time is the one that counts."""
    host, port = check_scheme(url)
    try:
        checked_addresses(host, port)
    except OSError:
        return


# --- enforcement at connect time -------------------------------------------------------------------------------------


class _GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, but the name is resolved here, every address checked, and the socket connected to
    a checked address: nothing resolves the name a second time between the check and the connect. TLS still uses
    the URL's host name (httpcore passes it separately as the server name)."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = checked_addresses(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}") from exc
        last: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError(f"cannot connect to {host}")

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise OutboundRefused("unix sockets are not an outbound destination")


class GuardedTransport(httpx.HTTPTransport):
    """An httpx transport whose every connection passes the outbound policy."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # httpx does not expose httpcore's network_backend; the pool reads it for each new connection.
        self._pool._network_backend = _GuardedBackend()


def guarded_client(**kwargs: Any) -> httpx.Client:
    """An httpx client under the policy. ``trust_env=False``: an HTTP_PROXY in the worker's environment would make
    the proxy, not the checked address, the one that connects."""
    kwargs.setdefault("follow_redirects", False)
    return httpx.Client(transport=GuardedTransport(), trust_env=False, **kwargs)


def install_litellm_guard() -> None:
    """Route litellm's own HTTP through the policy: OpenAI-compatible providers use ``client_session``, the others
    litellm's HTTPHandler, which takes ``sync_transport``, and a few (Ollama's model info and embeddings) the
    ``module_level_client`` that litellm built when it was imported."""
    import litellm
    from litellm.llms.custom_httpx.http_handler import HTTPHandler

    if not getattr(litellm.module_level_client, "_culprit_guarded", False):
        handler = HTTPHandler(
            client=guarded_client(follow_redirects=True, timeout=httpx.Timeout(600.0, connect=10.0))
        )
        handler._culprit_guarded = True
        litellm.module_level_client = handler

    if not isinstance(getattr(litellm, "client_session", None), httpx.Client) or not getattr(
        litellm.client_session, "_culprit_guarded", False
    ):
        client = guarded_client(follow_redirects=True, timeout=httpx.Timeout(600.0, connect=10.0))
        client._culprit_guarded = True
        litellm.client_session = client
    if not isinstance(getattr(litellm, "sync_transport", None), GuardedTransport):
        litellm.sync_transport = GuardedTransport()
