"""Debuggee for the end-to-end DAP tests, the debugpy comparison and the Emacs run.

Tests find lines by the MARK-* comments, never by number. Run plainly it prints
RESULT and DONE and exits 0; every test checks that a debug session leaves it so.
"""

import json


def add(a, b):
    c = a + b  # MARK-ADD-BODY
    return c


def scale(value, factor):  # MARK-SCALE-DEF
    scaled = value * factor  # MARK-SCALE-BODY
    return scaled


def check_positive(n):
    if n < 0:
        raise ValueError(f"negative: {n}")  # MARK-RAISE
    return n


def main():
    total = 0
    for i in range(5):
        total = add(total, i)  # MARK-LOGPOINT
        marker = i * 10  # MARK-COND
    for j in range(6):
        counted = j * 2  # MARK-HIT
    data = {"k": [1, 2, 3], "name": "alpha"}
    x = total * 2  # MARK-PLAIN
    y = add(x, 1)  # MARK-STEPIN
    z = scale(y, 3)  # MARK-AFTER-STEPIN
    text = json.dumps(data)  # MARK-LIBCALL
    try:
        check_positive(-1)  # MARK-CALL-RAISE
    except ValueError:
        caught = True
    print("RESULT", x, y, z, marker, counted, data["name"], len(text), caught, flush=True)  # MARK-RESULT
    return y


main()
print("DONE", flush=True)
