"""A stand-in for safe_attach_loader.py (set through PTVS_SAFE_ATTACH_LOADER_OVERRIDE or the
``loader=`` argument): it claims the settings as the real loader does, records where and how
it ran, opens a real listening socket and reports its port. Tests of the delivery mechanism
(mailbox, ptrace injector, errors, timeouts) use it so they do not depend on the listener."""

import sys

_THREADING_WAS_IMPORTED = "threading" in sys.modules

import json  # noqa: E402
import os  # noqa: E402


def _main(namespace):
    path = namespace["_fa_settings"]
    claimed = path + ".claimed"
    try:
        os.rename(path, claimed)
    except OSError:
        return
    with open(claimed) as f:
        parts = f.read().split("\0")
    settings = dict(zip(parts[0:-1:2], parts[1:-1:2]))
    # Apply the real loader's 3.12 main-thread fix, so tests check the code that ships.
    real_loader = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python", "fastattach",
                               "safe_attach_loader.py")
    if settings.get("PROBE_USE_MAIN_THREAD_FIX", "1") == "1":
        import runpy

        # runpy does not import threading, so the loader's own check sees what ours saw.
        loader_namespace = runpy.run_path(real_loader, run_name="attach_probe")
        loader_namespace["_fix_main_thread"](namespace.get("_fa_main_ident", 0), lambda message: None)
    import socket
    import threading

    probe_socket = socket.socket()
    probe_socket.bind((settings["PTVS_DEBUG_HOST"], int(settings["PTVS_DEBUG_PORT"])))
    probe_socket.listen()
    sys.__dict__.setdefault("_attach_probe_sockets", []).append(probe_socket)  # keep it open
    record = {
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
        "ident": threading.get_ident(),
        "native_id": threading.get_native_id(),
        "main_thread_ident": threading.main_thread().ident,
        "given_main_ident": namespace.get("_fa_main_ident", 0),
        "threading_was_imported": _THREADING_WAS_IMPORTED,
        "main_name_leak": [n for n in ("runpy", "_fa_settings", "_fa_main_ident", "_main", "probe_socket", "settings")
                           if n in vars(sys.modules["__main__"])],
        "port": probe_socket.getsockname()[1],
    }
    out = os.environ.get("ATTACH_PROBE_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")
    port_file = settings["PTVS_DEBUG_PORT_FILE"]
    with open(port_file + ".tmp", "w") as f:
        f.write(str(record["port"]))
    os.replace(port_file + ".tmp", port_file)


if __name__ == "<run_path>":
    _main(globals())
