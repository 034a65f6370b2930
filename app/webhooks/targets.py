"""Where a webhook may be sent (SPEC 8.4): in production an https URL whose host does not resolve
to a loopback, private or link-local address, unless WEBHOOK_ALLOW_PRIVATE.

Checked twice: when an endpoint is saved (the URL's form, and the address when it resolves), and
when each attempt connects (``CheckedBackend``): the address the connection is made to is the one
that was checked, so a name that resolves elsewhere later (DNS rebinding) gains nothing. TLS still
verifies the certificate against the URL's host name.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore2

MAX_URL_LENGTH = 2000

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(ValueError):
    """This URL, or the address its host resolves to, may not receive webhooks here."""


def refused_address(address: Address) -> bool:
    """Loopback, private, link-local, and the other ranges that are not the public internet."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def check_url(url: str, *, https_only: bool, private_allowed: bool) -> str:
    """The URL as it will be used, or TargetRefused saying why not. A host that does not resolve
    now is accepted: the address is checked again at every attempt."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or not url.isprintable() or " " in url:
        raise TargetRefused("the URL may hold only printable ASCII without spaces")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError as exc:
        raise TargetRefused(f"the URL cannot be read: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("the URL must start with https:// (or http:// outside production)")
    if https_only and parts.scheme != "https":
        raise TargetRefused("webhook URLs must be https in production")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("the URL may not carry a user name or password")
    if parts.fragment:
        raise TargetRefused("the URL may not have a fragment")
    if not private_allowed:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = resolve(parts.hostname, port)
        except OSError:
            addresses = []  # checked again when an attempt connects
        check_addresses(parts.hostname, addresses)
    return url


def resolve(host: str, port: int) -> list[Address]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_addresses(host: str, addresses: Iterable[Address]) -> None:
    for address in addresses:
        if refused_address(address):
            raise TargetRefused(
                f"{host} resolves to {address}, a loopback, private or link-local address"
                " (WEBHOOK_ALLOW_PRIVATE=true allows it)"
            )


class CheckedBackend(httpcore2.SyncBackend):
    """httpcore's network backend, connecting to an address it has checked: the host is resolved
    once, every address it resolves to is checked (one refused address refuses them all), and
    the connection goes to the first."""

    def __init__(self, private_allowed: bool) -> None:
        super().__init__()
        self.private_allowed = private_allowed

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        try:
            addresses = resolve(host, port)
        except OSError as exc:
            raise httpcore2.ConnectError(f"cannot resolve {host}") from exc
        if not addresses:
            raise httpcore2.ConnectError(f"cannot resolve {host}")
        if not self.private_allowed:
            check_addresses(host, addresses)
        return super().connect_tcp(str(addresses[0]), port, timeout, local_address, socket_options)
