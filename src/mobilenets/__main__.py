"""`python -m mobilenets` (also what `torchrun -m mobilenets` runs)."""

import sys

try:  # cli imports no torch, and main catches Ctrl-C from there on; this covers the milliseconds before it
    from .cli import main
except KeyboardInterrupt:
    print("\nmobilenets: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
