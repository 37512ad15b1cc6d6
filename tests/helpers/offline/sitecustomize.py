"""No test reaches the network: this module blocks connections that leave the machine.

Python imports ``sitecustomize`` at start-up from its path, and ``helpers.commands.run_cli`` (like every test
that starts ``python``) puts this folder first on the subprocess's ``PYTHONPATH``; ``conftest.py`` applies
the same guard inside the test process. Loopback connections (DDP's rendezvous, a local server) still work,
so a test meets exactly what an offline machine gives: a download fails at once instead of succeeding where
there is a network.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def is_loopback(address: object) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(sock: socket.socket, address: object) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address):
        raise OSError(errno.ENETUNREACH, f"Network is unreachable (the tests block connections to {address})")


def connect(self: socket.socket, address, /) -> None:
    _refuse(self, address)
    return _connect(self, address)


def connect_ex(self: socket.socket, address, /) -> int:
    _refuse(self, address)
    return _connect_ex(self, address)


def block_network() -> None:
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex


if __name__ == "sitecustomize":  # imported by a test's subprocess at start-up
    block_network()
