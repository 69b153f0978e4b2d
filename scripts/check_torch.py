"""Fail the install when pip replaced the pinned torch (e.g. a dependency pulled a CUDA build)."""
import sys

import torch

spec = sys.argv[1] if len(sys.argv) > 1 else ""
if "==" in spec:
    wanted = spec.split("==", 1)[1].strip()
    have = torch.__version__.split("+", 1)[0]
    if have != wanted:
        sys.exit(f"error: torch {torch.__version__} is installed but {spec} was pinned; "
                 "a dependency pulled another build")
print(f"torch {torch.__version__} ok")
