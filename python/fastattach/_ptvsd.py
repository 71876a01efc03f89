"""ptvsd 3's attach API, for old code: enable_attach, wait_for_attach, break_into_debugger, is_attached.

They behave as ptvsd documented them, on top of the public API and under its security
defaults, with these differences:
- the default address is 127.0.0.1:5678 (ptvsd used 0.0.0.0). A non-loopback address
  needs a secret, or allow_unauthenticated=True; the secret may also come from
  $FASTATTACH_SECRET. Clients send it as "secret" in their attach configuration, as
  VS Code's ptvsd-era launch.json did.
- redirect_output is accepted for compatibility; whether output goes to the client is
  the client's choice (its "redirectOutput" attach option), as with debugpy.
- enable_attach returns the (host, port) it bound, so port 0 is usable.
"""

from __future__ import annotations

from . import _api
from ._address import DEFAULT_HOST

DEFAULT_ADDRESS = (DEFAULT_HOST, 5678)


def enable_attach(secret: str | None = None, address=DEFAULT_ADDRESS, certfile: str | None = None,
                  keyfile: str | None = None, redirect_output: bool = True, *,
                  allow_unauthenticated: bool = False) -> tuple[str, int]:
    """Lets a debugger attach to this process at `address`, checking `secret` if it is set."""
    return _api.listen(address, secret=secret, certfile=certfile, keyfile=keyfile,
                       allow_unauthenticated=allow_unauthenticated)


def wait_for_attach(timeout: float | None = None) -> bool:
    """Blocks until a debugger has attached (and configured); False if `timeout` passed first."""
    return _api.wait_for_client(timeout)


def is_attached() -> bool:
    return _api.is_client_connected()


def __getattr__(name: str):
    # break_into_debugger is fastattach.breakpoint itself, not a wrapper around it: breakpoint()
    # stops in the frame that called it, which must be the user's, not one of ours.
    if name == "break_into_debugger":
        return _api.breakpoint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["enable_attach", "wait_for_attach", "break_into_debugger", "is_attached"]  # noqa: F822 (__getattr__)
