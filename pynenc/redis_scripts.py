"""The Lua scripts of the Redis backend: loaded from ``pynenc/orchestrator/*.lua``, checked, hashed.

Each ``<name>-<number of keys>.lua`` file opens with a comment header naming its KEYS; the
loader reads those names (the Python side passes exactly those keys) and checks that they
match the number in the file name. Every script is prefixed with ``K`` (its key names to
KEYS), the transition table generated from :mod:`pynenc.status`, and the shared prelude.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

SCRIPT_DIR = Path(__file__).parent / "orchestrator"
_KEY_ITEM = re.compile(r"KEYS\[(\d+)\]\s+(\w+)")


class Script:
    """One ``.lua`` file: its KEYS names (from the header) and its SHA1."""

    def __init__(self, path: Path, prelude: str) -> None:
        self.name = path.stem.rsplit("-", 1)[0]
        declared = int(path.stem.rsplit("-", 1)[1])
        body = path.read_text()
        keys: dict[int, str] = {}
        for line in body.splitlines():
            if not line.startswith("--"):
                break  # the header is the leading comment block
            for number, name in _KEY_ITEM.findall(line):
                if int(number) in keys:
                    raise ValueError(f"{path.name}: KEYS[{number}] listed twice in the header")
                keys[int(number)] = name
        self.key_names = [keys[i] for i in sorted(keys)]
        if sorted(keys) != list(range(1, declared + 1)):
            raise ValueError(f"{path.name}: header lists KEYS {sorted(keys)}, file name says {declared}")
        names = ", ".join(f"{name}=KEYS[{i}]" for i, name in enumerate(self.key_names, 1))
        self.source = f"local K = {{{names}}}\n" + prelude + "\n" + body
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


def _lua_transitions() -> str:
    from pynenc.status import TRANSITIONS

    # One constant string (" FROM>TO " per allowed move) rather than a table of tables:
    # a script's constants cost nothing per call, a table literal is rebuilt on every call.
    pairs = " ".join(f"{src.value}>{dst.value}" for src, dsts in TRANSITIONS.items() for dst in dsts)
    return f"local TRANSITIONS = ' {pairs} '\n"


@functools.cache
def load_scripts() -> dict[str, Script]:
    """Every ``<name>-<nkeys>.lua`` beside the Redis orchestrator, with the shared prelude."""
    prelude = _lua_transitions() + (SCRIPT_DIR / "redis_prelude.lua").read_text()
    scripts = {}
    for path in sorted(SCRIPT_DIR.glob("*-[0-9]*.lua")):
        script = Script(path, prelude)
        scripts[script.name] = script
    return scripts
