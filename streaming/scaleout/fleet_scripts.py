"""The fleet's keys, Lua scripts and view format (``streaming.scaleout.fleet``).

* ``{jobstream}:fleet:leases``: a sorted set, worker id (``<pid>-<8 hex>``)
  -> its lease's expiry in ms; every call of the worker extends it.
* ``{jobstream}:fleet:counts``: a hash, ``<worker>`` -> its open streams,
  ``<worker>|<ip>`` -> those from one address. Summed over live leases only;
  a dead worker's fields are deleted by the next refresh of anyone (reap).
* ``{jobstream}:fleet:view``: a hash, worker id -> JSON of its streams.

Every key carries the hash tag ``{jobstream}`` (``redis_keys``), so every
script's keys live in one Redis Cluster slot, beside the stream and the jobs. Scripts read the time from
Redis (``TIME``), so the hosts' clocks never matter. Every key a script
touches is one of ``KEYS``, declared in the call.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from streaming.scaleout.redis_keys import PREFIX, TAG

HASH_TAG = TAG
LEASES_KEY = f"{PREFIX}fleet:leases"
COUNTS_KEY = f"{PREFIX}fleet:counts"
VIEW_KEY = f"{PREFIX}fleet:view"
KEYS = (LEASES_KEY, COUNTS_KEY, VIEW_KEY)
SEP = "|"


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_DROP = """
local function drop(w)
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', KEYS[2], cursor, 'MATCH', w .. '|*', 'COUNT', 1000)
    cursor = page[1]
    local fields = page[2]
    for i = 1, #fields, 2 do redis.call('HDEL', KEYS[2], fields[i]) end
  until cursor == '0'
  redis.call('HDEL', KEYS[2], w)
  redis.call('HDEL', KEYS[3], w)
end
"""

# ARGV: worker, lease_ms, max_fleet, max_ip, resync, view JSON ('' keeps it),
# how many dead workers to reap (0: none), #releases, #resync pairs, #admissions, then the releases' addresses,
# the resync's (address, count) pairs and the admissions' addresses.
# Returns {1 if the worker had no lease, one verdict letter per admission}.
CALL_SCRIPT = (
    _NOW
    + _DROP
    + """
local wid, lease = ARGV[1], tonumber(ARGV[2])
local max_fleet, max_ip = tonumber(ARGV[3]), tonumber(ARGV[4])
local fresh = redis.call('ZADD', KEYS[1], now + lease, wid)
if ARGV[7] ~= '0' then
  local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[7]))
  for _, w in ipairs(dead) do
    drop(w)
    redis.call('ZREM', KEYS[1], w)
  end
end
local n_rel, n_sync, n_adm = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local i = 11
if ARGV[5] == '1' then drop(wid) end
for k = 1, n_rel do
  local f = wid .. '|' .. ARGV[i]
  i = i + 1
  if redis.call('HINCRBY', KEYS[2], f, -1) <= 0 then redis.call('HDEL', KEYS[2], f) end
  if redis.call('HINCRBY', KEYS[2], wid, -1) <= 0 then redis.call('HDEL', KEYS[2], wid) end
end
if n_sync > 0 then
  local mine = 0
  for k = 1, n_sync do
    local n = tonumber(ARGV[i + 1])
    redis.call('HSET', KEYS[2], wid .. '|' .. ARGV[i], n)
    mine = mine + n
    i = i + 2
  end
  redis.call('HSET', KEYS[2], wid, mine)
end
local out = {}
if n_adm > 0 then
  local live = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
  local total = 0
  if max_fleet > 0 then
    for _, w in ipairs(live) do total = total + (tonumber(redis.call('HGET', KEYS[2], w)) or 0) end
  end
  local per_ip = {}
  for k = 1, n_adm do
    local ip = ARGV[i]
    i = i + 1
    local verdict = '1'
    if max_fleet > 0 and total >= max_fleet then
      verdict = 'c'
    elseif max_ip > 0 then
      local n = per_ip[ip]
      if n == nil then
        n = 0
        for _, w in ipairs(live) do n = n + (tonumber(redis.call('HGET', KEYS[2], w .. '|' .. ip)) or 0) end
        per_ip[ip] = n
      end
      if n >= max_ip then verdict = 'i' end
    end
    if verdict == '1' then
      redis.call('HINCRBY', KEYS[2], wid .. '|' .. ip, 1)
      redis.call('HINCRBY', KEYS[2], wid, 1)
      total = total + 1
      if per_ip[ip] ~= nil then per_ip[ip] = per_ip[ip] + 1 end
    end
    out[k] = verdict
  end
end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[3], wid, ARGV[6]) end
return {fresh, table.concat(out)}
"""
)

# ARGV: worker. A worker that stops gives its slots back at once.
LEAVE_SCRIPT = (
    _DROP
    + """
drop(ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""
)

# The view of every worker whose lease has not expired.
VIEW_SCRIPT = (
    _NOW
    + """
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
if #live == 0 then return {} end
return redis.call('HMGET', KEYS[3], unpack(live))
"""
)


def key_slot(key: str) -> int:
    """Redis Cluster's slot of ``key`` (CRC16 of its hash tag, mod 16384)."""
    from redis.crc import key_slot as slot

    return int(slot(key.encode()))


def merge_views(raw: Iterable[str | None], host: str | None = None) -> list[dict[str, Any]]:
    """The streams of the workers' views (JSON from ``VIEW_SCRIPT``), each with
    ``host`` and ``worker_pid``; only ``host``'s when given."""
    out: list[dict[str, Any]] = []
    for text in raw:
        if not text:
            continue
        try:
            view = json.loads(text)
            where, pid, clients = view["host"], view["pid"], view["clients"]
        except (ValueError, KeyError, TypeError):
            continue
        if host is not None and where != host:
            continue
        for info in clients:
            info["host"] = where
            info["worker_pid"] = pid
            out.append(info)
    return out
