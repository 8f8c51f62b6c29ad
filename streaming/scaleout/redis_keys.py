"""Jobstream's Redis key names: one hash tag, so one Cluster slot.

Every key starts with ``{jobstream}:``. Redis Cluster hashes only the part
between the braces, so the event stream and every job key live in one slot:
a Lua script that computes its keys, a ``MULTI`` and a pipeline all stay on
one node, and ``WAIT`` goes to that node. The price, plainly: Cluster gives
Jobstream failover and room for other data, not a spread of its own keys
over several primaries; one primary holds the whole stream and job store.

Before the tag the keys were ``jobstream:...``. ``rename_legacy_keys`` renames
those once per database (one atomic script, guarded by a marker key), so an
upgrade keeps the stream, its ids and the jobs. Only on one Redis or Sentinel:
a Cluster never held the old names (the scripts could not run there).
"""

from __future__ import annotations

from typing import Any

TAG = "{jobstream}"
PREFIX = TAG + ":"
STREAM_KEY = PREFIX + "events"
LEGACY_PREFIX = "jobstream:"
RENAMED_KEY = PREFIX + "legacy-keys-renamed"

# KEYS: the marker. ARGV: the legacy prefix, the new one. Runs once: KEYS
# walks the keyspace, which is fine for the one start-up that finds a marker
# missing and far too slow to do on every start.
RENAME_LEGACY = """
if redis.call('SET', KEYS[1], 1, 'NX') == false then return -1 end
local old, new, n = ARGV[1], ARGV[2], 0
for _, key in ipairs(redis.call('KEYS', old .. '*')) do
  local target = new .. string.sub(key, #old + 1)
  if redis.call('EXISTS', target) == 0 then
    redis.call('RENAME', key, target)
    n = n + 1
  end
end
return n
"""


def rename_legacy_keys(client: Any) -> int:
    """Rename ``jobstream:*`` to ``{jobstream}:*`` unless done before in this
    database: the keys renamed, or -1 when the marker was already there."""
    return int(client.eval(RENAME_LEGACY, 1, RENAMED_KEY, LEGACY_PREFIX, PREFIX))
