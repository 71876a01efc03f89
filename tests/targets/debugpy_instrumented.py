"""A program written for debugpy, unchanged: tests/test_debugpy_shim.py runs it under
`python -m fastattach --listen ...`, where its debugpy calls are fastattach's."""

import debugpy

print("listen", debugpy.listen(5678), flush=True)
debugpy.configure(subProcess=False)
print("connected before wait", debugpy.is_client_connected(), flush=True)
debugpy.wait_for_client()
print("connected", debugpy.is_client_connected(), flush=True)
try:
    debugpy.connect(5679)
except RuntimeError as exc:
    print("connect:", exc, flush=True)
value = 7
debugpy.breakpoint()
print("after", value, flush=True)  # MARK-AFTER-BREAKPOINT
