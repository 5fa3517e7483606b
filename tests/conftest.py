import os
import sys

# Tests import the repository's packages, never a same-named installed one.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import rljax  # noqa: E402,F401  (sets XLA's CPU flags before any test creates a backend)
