"""A real debug session against examples/demo_app.py, narrated.

Starts the app under `python -m fastattach --listen 127.0.0.1:0 --wait-for-client`,
attaches a DAP client exactly as an editor would, and walks through a conditional
breakpoint, the stack, locals, evaluate, a step, a logpoint, a disconnect that leaves the
app running, and a second client.  Run: python examples/demo.py
"""

import os
import re
import subprocess
import sys
import time

from fastattach.net.client import DAPClient

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, "demo_app.py")


def line_of(marker):
    with open(APP) as source:
        return next(n for n, text in enumerate(source, 1) if marker in text)


def say(text):
    print(f"  {text}", flush=True)


def main():
    discount_line = line_of("# DEMO: discount line")
    app = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", "-m", "fastattach", "--listen", "127.0.0.1:0",
                            "--wait-for-client", APP], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = app.stderr.readline().strip()
        port = int(re.search(r":(\d+)$", banner).group(1))
        print(f"1. the app is waiting for a debugger: {banner!r}")

        client = DAPClient.connect("127.0.0.1", port)
        started = time.perf_counter()
        client.attach(breakpoints={APP: [{"line": discount_line, "condition": "order['id'] == 'w0-12'"}]})
        print(f"2. attached (initialize, attach, setBreakpoints, configurationDone) in "
              f"{(time.perf_counter() - started) * 1000:.0f} ms; conditional breakpoint at line {discount_line}")

        stopped = client.wait_stopped(30)
        frames = client.request("stackTrace", {"threadId": stopped["threadId"]})["body"]["stackFrames"]
        print(f"3. stopped ({stopped['reason']}) on thread {stopped['threadId']}; stack:")
        for frame in frames[:3]:
            say(f"{frame['name']} at line {frame['line']}")
        top = frames[0]
        scopes = client.request("scopes", {"frameId": top["id"]})["body"]["scopes"]
        local_vars = client.request("variables", {"variablesReference": scopes[0]["variablesReference"]}
                                    )["body"]["variables"]
        print("4. locals: " + ", ".join(f"{v['name']}={v['value']}" for v in local_vars
                                        if not v["name"].startswith("(")))
        print(f"5. evaluate subtotal * 2 -> {client.evaluate('subtotal * 2', top['id'])}")

        client.request("next", {"threadId": stopped["threadId"]})
        step = client.wait_stopped(30)
        print(f"6. step over -> {step['reason']} at line {client.top_frame(step['threadId'])['line']}")

        client.set_breakpoints(APP, [{"line": discount_line, "logMessage": "order {order['id']} subtotal={subtotal}"}])
        client.request("continue", {"threadId": step["threadId"]})
        logged = [client.wait_event("output", 30)["body"]["output"].strip() for _ in range(3)]
        print("7. replaced the breakpoint with a logpoint; the app keeps running and reports:")
        for line in logged:
            say(line)

        client.disconnect()
        print("8. disconnected: the breakpoints are gone and the app runs on at full speed")

        second = DAPClient.connect("127.0.0.1", port)
        condition = "order['item'] == 'plum' and order['quantity'] == 11"
        second.attach(breakpoints={APP: [{"line": discount_line, "condition": condition}]})
        again = second.wait_stopped(30)
        frame = second.top_frame(again["threadId"])
        print(f"9. a second client attached later and stopped at line {frame['line']}: "
              f"order id {second.evaluate('order[\"id\"]', frame['id'])}")
        stats = second.evaluate("__import__('fastattach').breakpoint_filter_stats()", frame["id"])
        counts = {k: int(v) for k, v in re.findall(r"'(\w+)': (\d+)", stats)}
        answered = counts["line_disable"] + counts["start_disable"] + counts["condition_false"]
        forwarded = counts["line_forward"] + counts["condition_forward"] + counts["start_forward"]
        print(f"   the C filter answered {answered} events itself and passed {forwarded} to pydevd")
        second.disconnect()

        out, err = app.communicate(timeout=60)
        print(f"10. the app finished normally (exit code {app.returncode}): {out.strip()}")
        return 0 if app.returncode == 0 else 1
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()


if __name__ == "__main__":
    sys.exit(main())
