"""Who is calling: the client's address behind a gRPC peer or an HTTP connection.

A peer is believed when it says whom it forwards for only if it is a trusted proxy
(the gateway beside the scheduler, a load balancer in front of the gateway); any
other peer is itself the client, whatever it puts in ``x-forwarded-for``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import unquote

FORWARDED_FOR = "x-forwarded-for"
# An IPv6 host holds a whole /64; throttling each of its addresses apart would
# give it 2**64 fresh starts.
IPV6_CLIENT_PREFIX = 64
MAX_CLIENT_LENGTH = 64

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"127.0.0.0/8, ::1"`` → networks (a bare address is a one-address network)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def grpc_peer_host(peer: str) -> str:
    """The host of a grpc peer string: ``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5`` (or
    percent-encoded ``ipv6:%5B::1%5D:5``) → the address; anything else as it is."""
    kind, _, rest = peer.partition(":")
    rest = unquote(rest)
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0] if rest.startswith("[") else rest
        return host.strip("[]")
    return peer


def forwarded_for(metadata: Iterable[tuple[str, Any]], key: str = FORWARDED_FOR) -> list[str]:
    """Every hop named in ``key`` entries, nearest client first, as sent."""
    hops: list[str] = []
    for name, value in metadata:
        if name.lower() == key:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            hops.extend(hop.strip() for hop in text.split(",") if hop.strip())
    return hops


def _trusted(address: Address | None, trusted: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in trusted)


def client_address(peer_host: str, forwarded: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: the peer, or, while the peer is a trusted proxy, the hop
    it forwards for, walking ``forwarded`` from the nearest hop back. A hop that is
    not an address ends the walk at the proxy that sent it."""
    current = peer_host
    address = _address(current)
    for hop in reversed(forwarded):
        if not _trusted(address, trusted):
            break
        hop_address = _address(hop)
        if hop_address is None:
            break
        current, address = str(hop_address), hop_address
    return str(address) if address is not None else current


def client_key(address: str) -> str:
    """What throttling counts by: the address, an IPv6 one as its /64."""
    parsed = _address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, IPV6_CLIENT_PREFIX), strict=False))
    if parsed is not None:
        return str(parsed)
    return address[:MAX_CLIENT_LENGTH]
