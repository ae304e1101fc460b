"""`python -m mobilenets` (also what `torchrun -m mobilenets` runs)."""

import sys

from .launch import main

sys.exit(main())
