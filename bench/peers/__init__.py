"""Task modules and client adapters, one module per system (``<name>_app.py``).

Each module is imported inside that system's own virtualenv (see
``bench.registry``): it may import its own library, ``redis`` and the standard
library, never the harness modules that need matplotlib or psutil.
"""
