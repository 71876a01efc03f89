"""A plain WSGI app (``web_app:app``, for gunicorn) and the same as ASGI (``web_app:asgi``, for
uvicorn), for tests/test_servers_*.py and benchmarks/bench_children.py.

Every answer is JSON and names the worker that served it. Paths:
- ``/`` and anything else: ``{"pid": ...}``, through view(), where the tests set breakpoints.
- ``/state``: what fastattach left in this worker (sys.monitoring tools, our listener,
  threads), as tests/targets/forking.py reports it for a forked child.
- ``/hold/NAME``: writes ``$WEB_APP_DIR/held-NAME`` (holding this worker's pid), then blocks
  this worker until ``$WEB_APP_DIR/release-NAME`` exists. Two requests held at once are
  served by two different workers: a held gunicorn sync worker takes no connection, and a
  held uvicorn worker's event loop accepts none, just as when a breakpoint holds them. The
  answer is /state's, with ``held``.
"""

import json
import os
import sys
import threading
import time

HOLD_LIMIT_S = 120.0   # a forgotten release never leaves a worker blocked for ever


def view(path: str) -> dict:
    answer = {"pid": os.getpid(), "path": path}  # view-breakpoint
    return answer


def elsewhere(path: str) -> dict:
    """Never called: the benchmark's breakpoints live here, off the request's path."""
    unused = {"path": path}  # elsewhere-breakpoint
    return unused


def state() -> dict:
    api = sys.modules.get("fastattach._api")
    session = api.session() if api is not None else None
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "tools": {str(i): sys.monitoring.get_tool(i) for i in range(6) if sys.monitoring.get_tool(i) is not None},
        "settrace": repr(sys.gettrace()),
        "fastattach_imported": api is not None,
        "listener": repr(session.listener) if session is not None else "None",
        "threads": sorted(t.name for t in threading.enumerate()),
    }


def hold(name: str) -> dict:
    out_dir = os.environ["WEB_APP_DIR"]
    with open(os.path.join(out_dir, f"held-{name}.tmp"), "w") as held:
        held.write(str(os.getpid()))
    os.replace(os.path.join(out_dir, f"held-{name}.tmp"), os.path.join(out_dir, f"held-{name}"))
    release = os.path.join(out_dir, f"release-{name}")
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return {**state(), "held": name}


def answer(path: str) -> dict:
    if path == "/state":
        return state()
    if path.startswith("/hold/"):
        return hold(path.removeprefix("/hold/"))
    return view(path)


def app(environ, start_response):
    body = json.dumps(answer(environ.get("PATH_INFO", "/"))).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps(answer(scope["path"])).encode()   # blocks the loop while held, as a breakpoint does
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
