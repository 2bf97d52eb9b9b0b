"""``python -m varbayes`` runs the ``varbayes`` command."""

import sys

from varbayes.cli import main

sys.exit(main())
