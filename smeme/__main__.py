"""`python -m smeme ...` (see smeme/cli.py)."""
import sys

from .cli import main

sys.exit(main())
