"""The Redis key schema and the scripts' KEYS headers, checked without a server.

Redis Cluster runs a script only when every key it touches is in KEYS and all
of them hash to one slot. These tests check that statically: every key of an
app carries the app's hash tag, and every ``K.<name>`` a script (or a prelude
function it calls) uses is declared in that script's header, from which the
Python side builds the KEYS it passes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from redis.crc import key_slot

from pynenc.conf.config_pynenc import ConfigPynenc
from pynenc.redis_client import redact, url_from_settings
from pynenc.redis_keys import KEY_NAMES, LEGACY_KEY_NAMES, PER_INVOCATION_HASHES, RedisKeys, queue_priority
from pynenc.redis_scripts import SCRIPT_DIR, Script, load_scripts

_FUNCTION = re.compile(r"^local function (\w+)\(", re.MULTILINE)
_K_USE = re.compile(r"\bK\.(\w+)")


def prelude_functions() -> dict[str, str]:
    text = (SCRIPT_DIR / "redis_prelude.lua").read_text()
    starts = [(m.start(), m.group(1)) for m in _FUNCTION.finditer(text)]
    bodies = {}
    for index, (start, name) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else len(text)
        bodies[name] = text[start:end]
    return bodies


def keys_used(body: str, functions: dict[str, str], seen: set[str] | None = None) -> set[str]:
    """K names used by ``body`` and, transitively, by the prelude functions it calls."""
    seen = set() if seen is None else seen
    used = set(_K_USE.findall(body))
    for name, function_body in functions.items():
        if name not in seen and re.search(rf"\b{name}\(", body):
            seen.add(name)
            used |= keys_used(function_body, functions, seen)
    return used


SCRIPTS = load_scripts()


def test_every_script_file_is_loaded() -> None:
    files = {path.stem.rsplit("-", 1)[0] for path in SCRIPT_DIR.glob("*-[0-9]*.lua")}
    assert files == set(SCRIPTS)
    assert {"register", "claim", "finish", "wait", "resume", "renew", "recover", "release", "kill", "retry"} <= files


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_header_declares_every_key_it_touches(name: str) -> None:
    script = SCRIPTS[name]
    path = next(SCRIPT_DIR.glob(f"{name}-*.lua"))
    assert len(script.key_names) == int(path.stem.rsplit("-", 1)[1])
    # Only upgrade reads the keys of pynenc 0.1 (to move what they hold into the current ones).
    known = set(KEY_NAMES) | (set(LEGACY_KEY_NAMES) if name == "upgrade" else set())
    assert set(script.key_names) <= known, "a header names a key that is not in the schema"
    assert len(set(script.key_names)) == len(script.key_names), "a key is listed twice"
    body = path.read_text()
    used = keys_used(body, prelude_functions())
    missing = used - set(script.key_names)
    assert not missing, f"{path.name} touches {sorted(missing)} without declaring them in its KEYS header"
    # No script builds a key name: KEYS[...] is only used generically (loops over its own header).
    assert "..':'" not in body.replace(" ", "") and "pynenc:" not in body


def test_script_header_is_parsed_from_the_leading_comment_only(tmp_path: Path) -> None:
    path = tmp_path / "demo-2.lua"
    path.write_text("-- KEYS[1] status  KEYS[2] owner\nlocal x = 1 -- KEYS[3] queue\n")
    assert Script(path, "").key_names == ["status", "owner"]
    bad = tmp_path / "bad-3.lua"
    bad.write_text("-- KEYS[1] status  KEYS[2] owner\n")
    with pytest.raises(ValueError, match="bad-3.lua"):
        Script(bad, "")


def test_every_key_of_an_app_carries_its_hash_tag_and_one_slot() -> None:
    keys = RedisKeys("shop-app").all_keys()
    assert len(keys) == len(KEY_NAMES)
    assert all(key.startswith("pynenc:{shop-app}:") for key in keys)
    assert len({key_slot(key.encode()) for key in keys}) == 1
    assert RedisKeys("shop-app").final_channel == "pynenc:{shop-app}:final"
    assert RedisKeys("shop-app").runner_final_channel("vm-12-ab") == "pynenc:{shop-app}:final:vm-12-ab"
    assert set(PER_INVOCATION_HASHES) <= set(KEY_NAMES)
    other = RedisKeys("other-app").all_keys()
    assert not set(keys) & set(other)
    with pytest.raises(KeyError):
        RedisKeys("shop-app").key("nonexistent")


def test_expire_script_clears_exactly_the_per_invocation_hashes() -> None:
    # expire HDELs the id from KEYS[2..11]: exactly the per-invocation hashes, nothing after
    names = SCRIPTS["expire"].key_names
    assert names[: 1 + len(PER_INVOCATION_HASHES)] == ["final_at", *PER_INVOCATION_HASHES]
    assert len(PER_INVOCATION_HASHES) == 10  # the script's loop says `for i = 2, 11`
    assert names[1 + len(PER_INVOCATION_HASHES) :] == ["counts", "failed_at"]


def test_queue_priority_round_trips_through_the_score() -> None:
    unit, base = 2**32, 2**31
    for priority in (0, 1, 7, 1000):
        for order in (base - 5, base + 1, base + 10**6):
            assert queue_priority(-priority * unit + order) == priority


def test_urls_never_show_the_password() -> None:
    assert redact("redis://:s3cret@host:6380/2") == "redis://:***@host:6380/2"
    assert redact("rediss://user:s3cret@host/0") == "rediss://user:***@host/0"
    assert redact("redis://host:6379/0") == "redis://host:6379/0"
    assert redact("redis+cluster://:pw@node1:7000") == "redis+cluster://:***@node1:7000"


def test_url_from_host_settings() -> None:
    conf = ConfigPynenc(
        config_values={
            "redis_host": "cache",
            "redis_port": 6390,
            "redis_db": 3,
            "redis_password": "pw",
            "redis_ssl": True,
        }
    )
    assert url_from_settings(conf) == "rediss://:pw@cache:6390/3"
    conf = ConfigPynenc(config_values={"redis_url": "redis://elsewhere:1/0", "redis_host": "ignored"})
    assert url_from_settings(conf) == "redis://elsewhere:1/0"


def test_docs_key_table_lists_every_key() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "redis.md").read_text()
    table = docs.split("## Key schema", 1)[1].split("\n## ", 1)[0]
    documented = set(
        re.findall(r"`(\w+)`", "\n".join(line.split("|")[1] for line in table.splitlines() if line.startswith("| `")))
    )
    assert documented == set(KEY_NAMES)
