"""`python -m suite`: ^C at any moment, even while the suite is still importing, is one line and exit 130."""

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
raise SystemExit(status)
