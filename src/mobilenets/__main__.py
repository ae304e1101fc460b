"""`python -m mobilenets` (also what `torchrun -m mobilenets` runs)."""

import sys

from .cli import main

sys.exit(main())
