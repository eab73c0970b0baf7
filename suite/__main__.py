"""`python -m suite`: ^C at any moment, even while the suite is still importing, is one line and exit 130."""

import sys

try:
    from suite.cli import main

    status = main()
except KeyboardInterrupt:  # before main's own handler is in place (imports) or after it returned
    print("interrupted", file=sys.stderr)
    status = 130
raise SystemExit(status)
