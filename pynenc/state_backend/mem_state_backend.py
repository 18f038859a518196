"""MemStateBackend: invocation records and runner info in process memory.

Records are owned by the MemOrchestrator, which mutates them under its lock;
reads here return copies so callers never see a half-made change.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterable
from typing import Any

from pynenc.models import InvocationRecord
from pynenc.state_backend.base import BaseStateBackend


class MemStateBackend(BaseStateBackend):
    family = "mem"

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.records: dict[str, InvocationRecord] = {}
        self.lock = threading.RLock()
        self._info: dict[str, dict[str, tuple[float, dict[str, Any]]]] = {}

    def get_record(self, invocation_id: str) -> InvocationRecord | None:
        with self.lock:
            record = self.records.get(invocation_id)
            return copy.deepcopy(record) if record else None

    def iter_records(self) -> Iterable[InvocationRecord]:
        with self.lock:
            return [copy.deepcopy(record) for record in self.records.values()]

    def publish_info(self, kind: str, key: str, data: dict[str, Any], ttl: float) -> None:
        with self.lock:
            self._info.setdefault(kind, {})[key] = (time.time() + ttl, dict(data))

    def list_info(self, kind: str) -> dict[str, dict[str, Any]]:
        now = time.time()
        with self.lock:
            entries = self._info.get(kind, {})
            return {key: dict(data) for key, (expires, data) in entries.items() if expires > now}

    def purge(self) -> None:
        with self.lock:
            self.records.clear()
            self._info.clear()
