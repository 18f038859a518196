"""Runners: what executes invocations (installed as ``pynenc.runners``)."""
