"""The Lua scripts of the Redis backend: loaded from ``pynenc/orchestrator/*.lua``, checked, hashed.

Each ``<name>-<number of keys>.lua`` file opens with a comment header naming its KEYS; the
loader reads those names (the Python side passes exactly those keys) and checks that they
match the number in the file name. A header line ``-- FLAGS: <flag> ... (why)`` gives the script's
Redis Functions flags (``no-writes`` for one that only reads, ``allow-oom`` for one that
frees memory and must run when Redis is full).

The scripts run in one of two forms, built from the same text:

- a Redis Functions library (Redis 7+, the default): the generated transition table, the
  shared prelude, and each script as a function of it. ``FUNCTION LOAD`` once per server,
  then ``FCALL`` per call: the prelude's functions are defined once, not on every call.
  The library and function names carry a digest of the library, so two pynenc versions
  sharing a server never call each other's functions;
- one self-contained script per call for ``EVALSHA`` (Redis before 7, or
  ``redis_functions = false``): the same table and prelude prepended to each script.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

SCRIPT_DIR = Path(__file__).parent / "orchestrator"
_KEY_ITEM = re.compile(r"KEYS\[(\d+)\]\s+(\w+)")
_FLAGS_LINE = re.compile(r"^--\s*FLAGS:\s*(.*)$")
#: the flags a script's header may give (as Redis Functions names them)
KNOWN_FLAGS = frozenset({"no-writes", "allow-oom"})


class Script:
    """One ``.lua`` file: its KEYS names and flags (from the header), its EVAL source and SHA1."""

    def __init__(self, path: Path, prelude: str) -> None:
        self.name = path.stem.rsplit("-", 1)[0]
        declared = int(path.stem.rsplit("-", 1)[1])
        self.body = path.read_text()
        keys: dict[int, str] = {}
        flags: list[str] = []
        for line in self.body.splitlines():
            if not line.startswith("--"):
                break  # the header is the leading comment block
            for number, name in _KEY_ITEM.findall(line):
                if int(number) in keys:
                    raise ValueError(f"{path.name}: KEYS[{number}] listed twice in the header")
                keys[int(number)] = name
            flag_line = _FLAGS_LINE.match(line)
            if flag_line:
                flags += flag_line.group(1).split("(")[0].split()  # "(...)" says why
        unknown = set(flags) - KNOWN_FLAGS
        if unknown:
            raise ValueError(f"{path.name}: unknown FLAGS {sorted(unknown)} (known: {sorted(KNOWN_FLAGS)})")
        self.flags = tuple(flags)
        self.key_names = [keys[i] for i in sorted(keys)]
        if sorted(keys) != list(range(1, declared + 1)):
            raise ValueError(f"{path.name}: header lists KEYS {sorted(keys)}, file name says {declared}")
        self.source = prelude + "\n" + self.body_source() + self.call_source()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()
        #: its name in the Functions library (set by :class:`Library`)
        self.function = ""

    def body_source(self) -> str:
        """The script's body as a function of (KEYS, ARGV): in a library it is defined once,
        not made anew by every call."""
        return f"local function body_{self.name}(KEYS, ARGV)\n{self.body}\nend\n"

    def call_source(self, keys_table: str | None = None) -> str:
        """One call: K (header names -> KEYS), the prelude's begin_call, the body, then end_call.

        ``keys_table``: a table kept by the library for this script, refilled on each call
        (every call sets the same names) instead of a new table per call.
        The body runs under pcall so that end_call (which writes the status counts of what
        the body changed) runs also when the body raised: Redis keeps a script's writes up
        to an error, and the counts must match them. The error is then raised again as is.
        """
        if keys_table is None:
            names = ", ".join(f"{name}=KEYS[{i}]" for i, name in enumerate(self.key_names, 1))
            set_keys = f"K = {{{names}}}\n"
        else:
            set_keys = f"K = {keys_table}\n" + "".join(
                f"K.{name} = KEYS[{i}]\n" for i, name in enumerate(self.key_names, 1)
            )
        return (
            f"{set_keys}begin_call(ARGV)\n"
            f"local ok, result = pcall(body_{self.name}, KEYS, ARGV)\n"
            "end_call()\nif not ok then error(result, 0) end\nreturn result\n"
        )


class Library:
    """Every script as a function of one Redis Functions library (the prelude defined once)."""

    def __init__(self, scripts: dict[str, Script], prelude: str) -> None:
        # Named by a digest of what the functions do: each script's self-contained source
        # (prelude, keys, body) and flags.
        digest = hashlib.sha1()
        for script in scripts.values():
            digest.update(f"{script.name} {script.flags} {script.sha}\n".encode())
        self.name = f"pynenc_{digest.hexdigest()[:12]}"
        parts = [f"#!lua name={self.name}\n", prelude]
        for name, script in scripts.items():
            script.function = f"{self.name}_{name}"
            flags = ", ".join(repr(flag) for flag in script.flags)
            parts.append(
                f"\n{script.body_source()}local K_{name} = {{}}\n"
                f"local function call_{name}(KEYS, ARGV)\n{script.call_source(f'K_{name}')}end\n"
                f"redis.register_function{{function_name='{script.function}', callback=call_{name}, "
                f"flags={{{flags}}}}}\n"
            )
        self.source = "".join(parts)


def _lua_transitions() -> str:
    from pynenc.status import TRANSITIONS

    # A table of tables: ALLOWED[from][to]. In a Functions library (Redis 7+) the prelude
    # runs once, at FUNCTION LOAD, so the lookup costs a call nothing more; with EVALSHA
    # (Redis 6) the literal is rebuilt per call, a few dozen table stores.
    rows = ", ".join(
        f"{src.value}={{{', '.join(f'{dst.value}=true' for dst in dsts)}}}" for src, dsts in TRANSITIONS.items()
    )
    return f"local ALLOWED = {{{rows}}}\n"


def prelude_source() -> str:
    """The Lua every script starts from: the allowed transitions, then redis_prelude.lua."""
    return _lua_transitions() + (SCRIPT_DIR / "redis_prelude.lua").read_text()


def load_scripts() -> dict[str, Script]:
    """Every ``<name>-<nkeys>.lua`` beside the Redis orchestrator, with the shared prelude."""
    return _load()[0]


def load_library() -> Library:
    """The scripts of :func:`load_scripts` as one Redis Functions library."""
    return _load()[1]


@functools.cache  # read once per process (the supervisor's, before it forks runners)
def _load() -> tuple[dict[str, Script], Library]:
    prelude = prelude_source()
    scripts = {}
    for path in sorted(SCRIPT_DIR.glob("*-[0-9]*.lua")):
        script = Script(path, prelude)
        scripts[script.name] = script
    return scripts, Library(scripts, prelude)
