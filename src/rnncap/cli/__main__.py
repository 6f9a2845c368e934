"""`python -m rnncap.cli ...` (what torchrun runs) is the `rnncap` command."""

import sys

from rnncap.cli import main

sys.exit(main())
