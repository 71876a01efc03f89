"""fastattach: a Python debugger you can leave on in production.

debugpy's API (listen, wait_for_client, is_client_connected, breakpoint, configure),
plus stop(), attach() to a running process, and ptvsd's API for old code.
"""

from ._api import breakpoint, configure, is_client_connected, listen, stop, wait_for_client

__all__ = ["breakpoint", "configure", "is_client_connected", "listen", "stop", "wait_for_client"]
__version__ = "0.1.0"
