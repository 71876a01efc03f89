"""Debuggee for the gevent tests: threads patched by gevent (greenlets), one breakpoint in run().

Run plainly it prints RAN 42 and DONE and exits 0.
"""

from gevent import monkey

monkey.patch_all()

import threading  # noqa: E402  (after patch_all, as gevent requires)


class Worker(threading.Thread):
    def run(self):
        value = 42  # MARK-GEVENT-RUN
        print("RAN", value, flush=True)


worker = Worker()
worker.start()
worker.join()
print("DONE", flush=True)
