"""``python -m scmodel.evaluate``: runs ``scmodel.evaluate.cli.main`` (flags and usage there).

Only the entry point: the command line lives in ``cli`` so that ``main`` can be imported (by tests,
by the old ``scmodel.evaluate_cli`` path) without importing a ``__main__`` module.
"""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
