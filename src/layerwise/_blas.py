"""scipy's OpenBLAS, configured before anything imports it.

Its worker threads keep spinning ~0.1 s after each call by default, taking a core from torch's next
kernels. OPENBLAS_THREAD_TIMEOUT bounds the spin; OpenBLAS reads it once, when it loads — so layerwise
sets it on import, before scipy is loaded, unless the user chose a value. `linalg.syrk_` runs only
when the bound holds (otherwise the blocked torch product is faster overall).
"""
import os
import sys

_user = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
_value = os.environ["OPENBLAS_THREAD_TIMEOUT"].strip()
SPIN_BOUNDED = (_user is not None or "scipy.linalg" not in sys.modules) and _value.isdigit() and int(_value) <= 8
