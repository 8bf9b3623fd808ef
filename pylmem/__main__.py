"""``python -m pylmem``: the ``pylmem`` command (:mod:`pylmem.io.cli`)."""
import sys

from .io.cli import main

sys.exit(main())
