"""Where a webhook may go: the SSRF guard, at submit and again at each connection.

Only http and https, to a host whose every address is public. Loopback, private, shared,
reserved and unspecified addresses are refused unless the URL's host is listed, exactly, in
WEBHOOK_ALLOWED_HOSTS; link-local addresses (the cloud metadata services among them) are
refused even then. The check is made on the addresses the name resolves to at that moment,
and the connection is made to those very addresses (delivery.GuardedBackend), so a name that
resolves to something else later (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECONDS = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Metadata services outside 169.254.0.0/16 and fe80::/10: AWS's IPv6 one, Alibaba's.
_METADATA = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)


class TargetRefused(Exception):
    """The URL may not receive webhooks; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # lower case, without the brackets of an IPv6 literal
    port: int


def parse_target(url: str) -> Target:
    """The URL's scheme, host and port, or TargetRefused for what is never allowed."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("must be an http or https URL")
    if not parts.hostname:
        raise TargetRefused("must name a host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("must not hold a user name or password")
    if any(character.isspace() for character in url):
        raise TargetRefused("must not contain white space")
    default = 443 if parts.scheme == "https" else 80
    return Target(parts.scheme, parts.hostname.lower(), port or default)


# IPv6 ranges that carry an IPv4 address in their last 32 bits, and reach it: NAT64's
# well-known prefix, and the deprecated IPv4-compatible addresses.
_WRAPPING_IPV4 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::/96"))


def _unwrapped(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64, compatible), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _WRAPPING_IPV4) and int(address) > 1:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def address_problem(address: IPAddress, host: str, allowed_hosts: Collection[str]) -> str | None:
    """Why a webhook to `host` may not go to `address`, if it may not."""
    address = _unwrapped(address)
    if address.is_link_local or address in _METADATA:
        return f"resolves to {address}, a link-local or metadata address"
    if host in allowed_hosts:
        return None
    if address.is_loopback:
        return f"resolves to {address}, a loopback address"
    if address.is_private:
        return f"resolves to {address}, a private address"
    if not address.is_global or address.is_multicast:
        return f"resolves to {address}, which is not a public address"
    return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The host's addresses: an IP literal as it is, a name as the resolver says now."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise TargetRefused(f"host {host!r} does not resolve: {exc or 'timed out'}") from None
    addresses: list[IPAddress] = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def checked_addresses(target: Target, allowed_hosts: Collection[str]) -> list[IPAddress]:
    """The target's addresses, every one of them allowed, or TargetRefused."""
    addresses = await resolve(target.host, target.port)
    if not addresses:
        raise TargetRefused(f"host {target.host!r} does not resolve")
    for address in addresses:
        problem = address_problem(address, target.host, allowed_hosts)
        if problem is not None:
            raise TargetRefused(problem)
    return addresses


async def check_url(url: str, allowed_hosts: Collection[str]) -> None:
    """TargetRefused unless webhooks may go to `url` (as its host resolves now)."""
    await checked_addresses(parse_target(url), allowed_hosts)
