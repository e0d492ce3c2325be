"""Versions of the changes shared through a store (a toggle's flip, a latch's trip or reset), so
that the last change by time wins in every process whatever order the writes arrive in.

A version is the change's wall-clock time in ns (never older than this process's previous
change) followed by a per-process tie-break, as a digit string of one width: a longer or
greater string is newer, and '' (none: state written by an earlier release) is older than any.
The store's scripts keep a change only when it is newer than the stored one (``NEWER_LUA``).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from typing import Final

__all__ = ["NEWER_LUA", "VERSIONED_HASH_LUA", "newer", "stamp"]

# Lua: the same order as newer(), for the scripts that store versioned changes.
NEWER_LUA: Final = """
local function newer(version, than)
  return #version > #than or (#version == #than and version > than)
end
"""

# Lua: a hash (KEYS[1]) whose one version field 'v' orders every change to it (a latch's):
# stored() its version, reply(s) s with it appended, take(version) stores version when newer.
VERSIONED_HASH_LUA: Final = (
    NEWER_LUA
    + """
local function stored()
  return redis.call('HGET', KEYS[1], 'v') or ''
end
local function reply(s)
  s[#s + 1] = stored()
  return s
end
local function take(version)
  if not newer(version, stored()) then return false end
  redis.call('HSET', KEYS[1], 'v', version)
  return true
end
"""
)


def _origin() -> int:
    return secrets.randbelow(10**10)


_origin_id = _origin()  # the tie-break of this process's versions (two changes in the same ns)
_last_ns = 0
_lock = threading.Lock()  # event loops in several threads may change shared state at once


def _reseed() -> None:
    global _origin_id, _last_ns
    _origin_id, _last_ns = _origin(), 0


os.register_at_fork(after_in_child=_reseed)


def stamp() -> str:
    """The version of a change made now: never older than this process's previous one."""
    global _last_ns
    with _lock:
        ns = _last_ns = max(time.time_ns(), _last_ns + 1)
        return f"{ns:020d}{_origin_id:010d}"


def newer(version: str, than: str) -> bool:
    """Whether one version is newer than another ('' for none: older than any)."""
    return len(version) > len(than) or (len(version) == len(than) and version > than)
