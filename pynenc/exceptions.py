"""Every error pynenc raises descends from :class:`PynencError`.

The tree has one subtree per component so callers can catch exactly what they
handle. Control flow (a task asking to be retried, a runner being stopped) is
kept separate from errors: see :class:`RetryError` and :class:`RunnerStopped`.
"""

from __future__ import annotations

from typing import Any


class PynencError(Exception):
    """Root of every pynenc error."""


# --- configuration -------------------------------------------------------------------------
class ConfigurationError(PynencError):
    """A setting, option or component name is invalid."""


class AppLoadError(ConfigurationError):
    """The app named by ``--app`` cannot be imported or is not a Pynenc app."""


class UnknownTaskOptionError(ConfigurationError):
    """A task decorator received an option pynenc does not know."""


class InvalidComponentError(ConfigurationError):
    """A ``*_cls`` setting names a class that does not exist."""


# --- serialization -------------------------------------------------------------------------
class SerializationError(PynencError):
    """A value could not be serialized or deserialized."""


class PickleRefusedError(SerializationError):
    """A pickled (dill) payload met a reader that never unpickles (JsonSerializer)."""


# --- invocations ---------------------------------------------------------------------------
class InvocationError(PynencError):
    """Problems with an invocation as a whole."""


class RegistrationError(InvocationError):
    """The backend refused a registration that was sent ahead of its reply (pipelined)."""


class InvocationNotFoundError(InvocationError):
    """No invocation with this id exists (distinct from one that is still pending)."""


class InvocationStatusTransitionError(InvocationError):
    """A status change that the transition table does not allow."""

    def __init__(self, invocation_id: str, current: Any, requested: Any, reason: str = "") -> None:
        self.invocation_id = invocation_id
        self.current = current
        self.requested = requested
        detail = f": {reason}" if reason else ""
        super().__init__(f"invocation {invocation_id} cannot move from {current} to {requested}{detail}")


class InvocationKilledError(InvocationError):
    """The awaited invocation was killed by an operator."""


class ResultTimeoutError(InvocationError, TimeoutError):
    """Waiting for a result took longer than the caller allowed."""


class StalledInvocationError(InvocationError):
    """An invocation's runner died or hung more often than ``max_stalls`` allows."""


class RemoteTaskError(InvocationError):
    """A task failed with an exception whose type could not be rebuilt here."""

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback
        super().__init__(f"{type_name}: {message}")


# --- concurrency ---------------------------------------------------------------------------
class ConcurrencyError(PynencError):
    """Concurrency control refused something."""


class ConcurrencyControlledError(ConcurrencyError):
    """The invocation was not run because a matching one was running (CONCURRENCY_CONTROLLED_FINAL)."""


class DifferentNonKeyArgumentsError(ConcurrencyError):
    """A call matched a registered invocation by key arguments but differs in the others."""


# --- cycles --------------------------------------------------------------------------------
class CycleDetectedError(PynencError):
    """Waiting on this invocation would close a cycle of waits (it could never finish).

    ``chain`` lists the invocations involved, from the waiter outwards, each as a
    ``(task_id, arguments, invocation_id)`` tuple.
    """

    def __init__(self, message: str, chain: list[tuple[str, str, str]] | None = None) -> None:
        self.chain = chain or []
        super().__init__(message)

    @classmethod
    def from_chain(cls, chain: list[tuple[str, str, str]]) -> CycleDetectedError:
        steps = " -> waits for -> ".join(f"{task}({args}) [{inv}]" for task, args, inv in chain)
        return cls(f"cycle of waits detected, it could never finish: {steps}", chain)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (str(self), self.chain))


# --- runners -------------------------------------------------------------------------------
class RunnerError(PynencError):
    """Runner failures."""


class RunnerNotConfiguredError(RunnerError):
    """The app still uses the DummyRunner, which cannot run anything."""


class BackendUnavailableError(PynencError):
    """The storage backend (Redis, SQLite file) cannot be reached or opened."""


class LeaseLostError(RunnerError):
    """A runner tried to act on an invocation it no longer owns."""


# --- control flow (not errors) -------------------------------------------------------------
class RetryError(Exception):
    """Raise inside a task to ask for a retry (it is in ``retry_for`` by default)."""


class RunnerStopped(Exception):
    """Raised inside a runner's worker when the runner is shutting down."""
