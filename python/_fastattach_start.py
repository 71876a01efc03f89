"""fastattach's start-up for child processes as a PEP 829 entry point (fastattach-subprocess.start).

Installed only by an editable install (CMakeLists.txt says why); it does what
fastattach-subprocess.pth does, after the editable finder is in place: nothing unless the
parent set FASTATTACH_SUBPROCESS.
"""

import os


def boot() -> None:
    if os.environ.get("FASTATTACH_SUBPROCESS"):
        from fastattach._api import boot_child

        boot_child()
