"""``python -m pylmem``: the ``pylmem`` command (see :mod:`pylmem.cli`)."""
import sys

from .cli import main

sys.exit(main())
