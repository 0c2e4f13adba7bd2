"""Loaded by every Python process whose PYTHONPATH starts here (tests/test_tracking.py): no network.

A connection to anything but this machine (loopback, a Unix socket) is refused, and its address is appended
to the file NETWORK_ATTEMPTS names, so that a test sees a tracker that tried the network even when the
tracker swallows the error.
"""

import ipaddress
import os
import socket

_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _is_local(address) -> bool:
    if not isinstance(address, tuple):  # a Unix socket path
        return True
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: resolving it is already the network


def _refuse(address) -> None:
    with open(os.environ["NETWORK_ATTEMPTS"], "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()} {address!r}\n")
    raise OSError(f"network access refused in an offline test: {address!r}")


def connect(self, address):
    if not _is_local(address):
        _refuse(address)
    return _connect(self, address)


def connect_ex(self, address):
    if not _is_local(address):
        _refuse(address)
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if host is not None and not _is_local((host if isinstance(host, str) else host.decode(), 0)):
        _refuse((host, *args[:1]))
    return _getaddrinfo(host, *args, **kwargs)


if os.environ.get("NETWORK_ATTEMPTS"):
    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.getaddrinfo = getaddrinfo
