"""Script calls sent ahead: sent now, their replies read later, in the order sent.

A single ``task(...)`` call sends its ``register`` script and returns (see
:meth:`pynenc.redis_client.RedisConnection.send_ahead`). The calls a process sends this way
share one connection, so Redis applies them in order, and at most :data:`AHEAD_WINDOW`
replies are unread at a time. :meth:`CallsAhead.settle` reads them before any other command
of the process is sent, and at exit, so whatever the process does next sees every call it
made. A reply lost with its connection, or saying the script is not loaded, sends that call
again (each such script is safe to repeat: a repeat finds the work done); a refusal raises
:class:`~pynenc.exceptions.RegistrationError` naming the calls once every reply was read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from pynenc import redis_errors as errors
from pynenc.exceptions import PynencError, RegistrationError
from pynenc.redis_conn import Client, NoScriptError
from pynenc.redis_wire import sent_again

log = logging.getLogger("pynenc.redis")

#: calls sent ahead whose replies may be unread at once (then the sender reads them)
AHEAD_WINDOW = 64
#: what settle(then=...) returns when it did not send (or could not use the reply of) ``then``
NOT_SENT: Any = object()


class SentAhead:
    """A call sent ahead, kept to send again if its reply is lost."""

    __slots__ = ("name", "keys", "args", "what")

    def __init__(self, name: str, keys: Sequence[str | bytes], args: list[Any], what: str) -> None:
        self.name, self.keys, self.args, self.what = name, keys, args, what


class CallsAhead:
    """The calls one process sent ahead, whose replies are unread, and the connection they took.

    ``run_again(name, keys, args)`` runs a call whose reply was lost (with retries);
    ``give_back(connection)`` returns the connection to the process's kept connections.
    """

    def __init__(self, run_again: Callable[[str, Sequence[str | bytes], list[Any]], Any]) -> None:
        self.run_again = run_again
        #: in the order sent, on ``wire``
        self.unsettled: list[SentAhead] = []
        self.wire: Any = None
        self.lock = threading.RLock()
        self.settling = False

    def send(self, connections: Client, command: bytes, call: SentAhead) -> None:
        """Send ``command`` (the packed ``call``) and return before its reply."""
        with self.lock:
            if len(self.unsettled) >= AHEAD_WINDOW:
                self.settle(connections)
            if self.wire is None:
                self.wire = connections.take()
            self.unsettled.append(call)
            try:
                self.wire.send_packed_command([command])
            except errors.CONNECTION_ERRORS:
                self.settle(connections)  # what this connection held (this call too) is sent again

    def settle(self, connections: Client | None, then: bytes | None = None) -> Any:
        """Read the replies of the calls sent ahead, in order (see the module's docstring).

        ``then``: a packed read-only command to send behind them on their connection, so
        one round trip reads everything; its reply is returned, or ``NOT_SENT`` when it
        was not sent or its reply is unusable (lost, an error): the caller sends it itself.
        """
        if not self.unsettled:
            return NOT_SENT
        failures: list[str] = []
        result: Any = NOT_SENT
        with self.lock:
            # Others wait on the lock until every reply is read; a call this makes again
            # (run_again, which settles first) must not re-enter.
            if self.settling or not self.unsettled:
                return NOT_SENT
            self.settling = True
            wire = self.wire
            lost = wire is None
            if then is not None and not lost:
                try:
                    wire.send_packed_command([then])
                except errors.CONNECTION_ERRORS:
                    then, lost = None, True
                    wire.disconnect()
            try:
                for sent in self.unsettled:
                    try:
                        if not lost:
                            try:
                                wire.read_response()
                                continue
                            except NoScriptError:
                                pass  # the scripts were flushed: running it again loads them
                            except errors.CONNECTION_ERRORS:
                                lost = True
                                wire.disconnect()
                        self.run_again(sent.name, sent.keys, sent_again(sent.args) if lost else sent.args)
                    except errors.REPLY_ERRORS as exc:
                        failures.append(f"{sent.what}: {errors.translate(exc)}")
                    except PynencError as exc:
                        failures.append(f"{sent.what}: {exc}")
                if then is not None and not lost:
                    try:
                        result = wire.read_response()
                    except errors.REPLY_ERRORS:
                        result = NOT_SENT  # read whole; the caller's own call reports it
                    except errors.CONNECTION_ERRORS:
                        wire.disconnect()
                if wire is not None and connections is not None:
                    connections.give(wire)
            except BaseException:
                if wire is not None:
                    wire.disconnect()  # replies may be left unread on it
                raise
            finally:
                self.unsettled = []
                self.wire = None
                self.settling = False
        for failure in failures:
            log.error("not applied: %s", failure)
        if failures:
            raise RegistrationError("not applied: " + "; ".join(failures))
        return result
