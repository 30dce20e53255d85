"""Kernels: GDN recurrence (`gdn/`), the boundary-aware short convolution (`conv.py`) and the gated RMSNorm
(`norm.py`). Imports nothing else of the package, so it can be used and tested on its own."""
