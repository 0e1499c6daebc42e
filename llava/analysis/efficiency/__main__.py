"""``python -m llava.analysis.efficiency``."""

import sys

from llava.analysis.efficiency.cli import main

sys.exit(main())
