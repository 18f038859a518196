"""The state backend contract: what is stored about invocations and runners.

Invocation records (arguments, result or error, history) are written by the
orchestrator inside its transitions and read here. The state backend also
keeps short-lived information that runners and supervisors publish about
themselves (with an expiry), which is how ``pynenc status`` on any host sees
who is alive.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from pynenc.models import InvocationRecord

if TYPE_CHECKING:
    from pynenc.app import Pynenc


class BaseStateBackend(ABC):
    family: ClassVar[str] = ""

    def __init__(self, app: Pynenc) -> None:
        self.app = app

    @classmethod
    def preload(cls) -> None:
        """Prepare, once, what every process of this backend needs, connecting to nothing.

        A supervisor calls it before forking runners (see ``Pynenc.preload``): files read
        and caches filled here are shared with every runner instead of being built again,
        privately, in each one. Nothing by default.
        """

    @abstractmethod
    def get_record(self, invocation_id: str) -> InvocationRecord | None: ...

    @abstractmethod
    def iter_records(self) -> Iterable[InvocationRecord]: ...

    @abstractmethod
    def publish_info(self, kind: str, key: str, data: dict[str, Any], ttl: float) -> None:
        """Store ``data`` under (kind, key) for ``ttl`` seconds (e.g. kind="supervisor")."""

    @abstractmethod
    def list_info(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every unexpired entry of ``kind``, by key."""

    @abstractmethod
    def purge(self) -> None: ...

    def close(self) -> None:
        """Release connections."""
