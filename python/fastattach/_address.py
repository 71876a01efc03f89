"""The one reading of a debugger address: a port, "[HOST:]PORT", "[V6]:PORT" or (host, port).

Every entry point (listen(), ptvsd's enable_attach, the command line, the TLS forwarder,
attach()) parses addresses here, so they all accept and refuse the same things.
"""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"


def parse_address(address, *, default_host: str | None = DEFAULT_HOST) -> tuple[str, int]:
    """(host, port). A missing or empty host is `default_host` (None: a host is required);
    port 0 picks a free port. ValueError says what is wrong, quoting the address."""
    form = "[HOST:]PORT" if default_host is not None else "HOST:PORT"
    if isinstance(address, tuple):
        if len(address) != 2:
            raise ValueError(f"address must be a port or (host, port), not {address!r}")
        host, port = address
        if isinstance(port, str) and port.isdigit():
            port = int(port)
    elif isinstance(address, str):
        host, colon, port_text = address.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not port_text.strip().isdigit() or (not colon and default_host is None):
            raise ValueError(f"invalid address {address!r}: expected {form}")
        port = int(port_text)
    else:
        host, port = "", address
    if host == "" and default_host is not None:
        host = default_host
    if not isinstance(host, str) or not host:
        raise ValueError(f"invalid address {address!r}: expected {form} with a non-empty host")
    if isinstance(port, bool) or not isinstance(port, int):
        raise ValueError(f"invalid address {address!r}: the port must be an integer")
    if not 0 <= port < 65536:
        raise ValueError(f"invalid port in {address!r}: must be 0-65535 (0 picks a free port)")
    return host, port
