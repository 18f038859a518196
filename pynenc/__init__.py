"""pynenc: distributed task orchestration for Python.

``from pynenc import Pynenc`` then decorate module-level functions with
``@app.task``; calling one returns an invocation whose ``.result`` waits for it.
"""

from pynenc.app import Pynenc
from pynenc.builder import PynencBuilder
from pynenc.conf.config_task import ConcurrencyControlType
from pynenc.exceptions import PynencError, RetryError
from pynenc.invocation import Invocation, InvocationGroup
from pynenc.status import InvocationStatus
from pynenc.task import DirectTask, Task

__all__ = [
    "ConcurrencyControlType",
    "DirectTask",
    "Invocation",
    "InvocationGroup",
    "InvocationStatus",
    "Pynenc",
    "PynencBuilder",
    "PynencError",
    "RetryError",
    "Task",
]
