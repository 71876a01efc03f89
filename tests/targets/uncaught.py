"""Debuggee that catches one exception and then dies of another (exit status 1)."""


def fail(kind):
    raise kind("boom")  # MARK-FAIL


def main():
    try:
        fail(KeyError)  # MARK-CAUGHT
    except KeyError:
        pass
    fail(ValueError)  # MARK-UNCAUGHT


main()
