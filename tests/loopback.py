"""Ports for the processes the e2e and benchmark suites start on loopback."""

import random
import socket
from pathlib import Path


def free_port() -> int:
    """A port below the kernel's ephemeral range: binding port 0 (the mocks)
    and outgoing connections take ephemeral ports, and could take this one
    between our check and the server's bind."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
