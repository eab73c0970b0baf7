"""`python -m suite`: ^C at any moment, even while the suite is still importing, is one line and exit 130."""

import os
import signal
import sys

try:
    from suite.cli import main

    status = main()
except KeyboardInterrupt:  # before main's own handler is in place (imports)
    print("interrupted", file=sys.stderr)
    status = 130
finally:  # a ^C during the interpreter's own teardown would print a traceback and exit by SIGINT
    signal.signal(signal.SIGINT, signal.SIG_IGN)
if status in (130, 143):  # interrupted: everything is written and the workers are gone; CPython would still
    sys.stdout.flush()  # end a process that saw a KeyboardInterrupt by SIGINT now and then (exit -2), so
    sys.stderr.flush()  # leave without its teardown
    os._exit(status)
raise SystemExit(status)
