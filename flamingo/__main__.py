"""``python -m flamingo`` is the ``flamingo`` command."""

import sys

from flamingo.cli import main

sys.exit(main())
