"""``python -m attnmt`` (and ``torchrun -m attnmt``) run the command-line interface."""

import sys

from attnmt.cli import main

sys.exit(main())
