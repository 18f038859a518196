"""InlineRunner: the stand-in runner for dev mode, where calls run in the caller."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pynenc.context import Execution


class InlineRunner:
    """Waiting inside an inline call never pauses: the awaited call already ran."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def wait_for(
        self, execution: Execution, invocation_ids: Sequence[str], timeout: float | None
    ) -> dict[str, str | None]:
        self.app.wait_outside_task(invocation_ids, timeout)
        return {}
