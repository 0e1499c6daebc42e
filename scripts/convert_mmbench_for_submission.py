"""The original tree's `python scripts/convert_mmbench_for_submission.py ...`: runs :mod:`llava.eval.convert_mmbench_for_submission` (same flags)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout without install

from llava.eval.convert_mmbench_for_submission import main  # noqa: E402

if __name__ == "__main__":
    main()
