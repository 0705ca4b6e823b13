"""`python -m artlora.cli`: what `accelerate launch -m artlora.cli train ...` runs in each process."""

import sys

from artlora.cli import main

sys.exit(main())
