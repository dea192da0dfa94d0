"""``python -m pepr.cli``: the workflow's training rules run ``pepr train`` this way."""

import sys

from pepr.cli import main

sys.exit(main())
