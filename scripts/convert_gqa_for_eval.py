"""The original tree's `python scripts/convert_gqa_for_eval.py ...`: runs :mod:`llava.eval.convert_gqa_for_eval` (same flags)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout without install

from llava.eval.convert_gqa_for_eval import main  # noqa: E402

if __name__ == "__main__":
    main()
