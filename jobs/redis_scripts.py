"""The Lua scripts behind ``jobs.redis_store.RedisJobStore``: every write is one script.

Redis runs a script atomically, so a status change moves the job between the
sorted sets and adjusts the counts in the same step, and ``CLAIM`` hands each
pending job to exactly one runner across processes and hosts. Keys follow the
layout in ``jobs.redis_store``; every script takes the key prefix as ``ARGV[1]``
and computes its keys from it, which a single Redis (or Sentinel) allows and
Redis Cluster does not.
"""

from __future__ import annotations

# Shared by the scripts below: move job ARGV-named ``id`` from status ``cur``
# to ``new`` in the sets and the counts.
MOVE = """
local function move(p, id, key, cur, new)
  if new == cur then return end
  local seq = redis.call('HGET', key, 'seq')
  redis.call('HSET', key, 'status', new)
  redis.call('ZREM', p .. 'jobs:status:' .. cur, id)
  redis.call('ZADD', p .. 'jobs:status:' .. new, seq, id)
  redis.call('HINCRBY', p .. 'jobs:counts', cur, -1)
  redis.call('HINCRBY', p .. 'jobs:counts', new, 1)
  if cur == 'pending' then
    redis.call('ZREM', p .. 'jobs:pending:' .. redis.call('HGET', key, 'type'), id)
  end
end
"""

# The set of the jobs a user owns (``sub``), or of the unowned ones ('').
VISIBILITY = """
local function visibility_key(p, sub)
  if sub == '' then return p .. 'jobs:unowned' end
  return p .. 'jobs:owner:' .. sub
end
"""

# ARGV: prefix, id, type, name, params, now, owner's sub ('' = unowned)
CREATE = (
    VISIBILITY
    + """
local p, id, now, sub = ARGV[1], ARGV[2], ARGV[6], ARGV[7]
local key = p .. 'job:' .. id
local seq = redis.call('INCR', p .. 'jobs:seq')
redis.call('HSET', key, 'id', id, 'type', ARGV[3], 'name', ARGV[4], 'params', ARGV[5], 'status', 'pending',
  'progress', '0', 'created_at', now, 'updated_at', now, 'version', 1, 'seq', seq, 'attempts', 0,
  'cancel_requested', 0)
if sub ~= '' then redis.call('HSET', key, 'owner_sub', sub) end
redis.call('ZADD', visibility_key(p, sub), seq, id)
redis.call('ZADD', p .. 'jobs:all', seq, id)
redis.call('ZADD', p .. 'jobs:ids', 0, id)
redis.call('ZADD', p .. 'jobs:status:pending', seq, id)
redis.call('ZADD', p .. 'jobs:pending:' .. ARGV[3], seq, id)
redis.call('HINCRBY', p .. 'jobs:counts', 'pending', 1)
return redis.call('HGETALL', key)
"""
)

# ARGV: prefix, id, expected status, expected owner ('' = any), new status ('' = same),
#       n, then n field/value pairs to set, then fields to delete. Bumps version.
UPDATE = (
    MOVE
    + """
local p, id = ARGV[1], ARGV[2]
local key = p .. 'job:' .. id
local cur = redis.call('HGET', key, 'status')
if not cur or cur ~= ARGV[3] then return false end
if ARGV[4] ~= '' and redis.call('HGET', key, 'owner') ~= ARGV[4] then return false end
local i = 7
for _ = 1, tonumber(ARGV[6]) do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', key, ARGV[i])
  i = i + 1
end
redis.call('HINCRBY', key, 'version', 1)
if ARGV[5] ~= '' then move(p, id, key, cur, ARGV[5]) end
return redis.call('HGETALL', key)
"""
)

# ARGV: prefix, now, owner, types...
CLAIM = (
    MOVE
    + """
local p, now, owner = ARGV[1], ARGV[2], ARGV[3]
local best, best_seq = nil, nil
for i = 4, #ARGV do
  local top = redis.call('ZRANGE', p .. 'jobs:pending:' .. ARGV[i], 0, 0, 'WITHSCORES')
  if top[1] and (best_seq == nil or tonumber(top[2]) < best_seq) then
    best, best_seq = top[1], tonumber(top[2])
  end
end
if not best then return false end
local key = p .. 'job:' .. best
redis.call('HSET', key, 'started_at', now, 'updated_at', now, 'owner', owner)
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HINCRBY', key, 'version', 1)
move(p, best, key, 'pending', 'in_progress')
return redis.call('HGETALL', key)
"""
)

# ARGV: prefix, id, now -> {outcome, job fields...}
CANCEL = (
    MOVE
    + """
local p, id, now = ARGV[1], ARGV[2], ARGV[3]
local key = p .. 'job:' .. id
local cur = redis.call('HGET', key, 'status')
if not cur then return {'missing'} end
if cur == 'pending' then
  redis.call('HSET', key, 'finished_at', now, 'updated_at', now)
  redis.call('HINCRBY', key, 'version', 1)
  move(p, id, key, cur, 'cancelled')
elseif cur == 'in_progress' then
  redis.call('HSET', key, 'cancel_requested', 1)
else
  return {'terminal', cur}
end
local out = redis.call('HGETALL', key)
table.insert(out, 1, 'ok')
return out
"""
)

# ARGV: prefix, id -> 1 when a pending job was deleted
WITHDRAW = (
    VISIBILITY
    + """
local p, id = ARGV[1], ARGV[2]
local key = p .. 'job:' .. id
if redis.call('HGET', key, 'status') ~= 'pending' then return 0 end
local job_type = redis.call('HGET', key, 'type')
redis.call('ZREM', visibility_key(p, redis.call('HGET', key, 'owner_sub') or ''), id)
redis.call('DEL', key)
redis.call('ZREM', p .. 'jobs:all', id)
redis.call('ZREM', p .. 'jobs:ids', id)
redis.call('ZREM', p .. 'jobs:status:pending', id)
redis.call('ZREM', p .. 'jobs:pending:' .. job_type, id)
redis.call('HINCRBY', p .. 'jobs:counts', 'pending', -1)
return 1
"""
)

# ARGV: prefix. Jobs stored before owners existed are in no visibility set:
# put every job without an owner into ``jobs:unowned``, once per database.
INDEX_UNOWNED = """
local p = ARGV[1]
if redis.call('SET', p .. 'jobs:unowned:indexed', 1, 'NX') == false then return 0 end
local all = redis.call('ZRANGE', p .. 'jobs:all', 0, -1, 'WITHSCORES')
local n = 0
for i = 1, #all, 2 do
  if redis.call('HEXISTS', p .. 'job:' .. all[i], 'owner_sub') == 0 then
    redis.call('ZADD', p .. 'jobs:unowned', all[i + 1], all[i])
    n = n + 1
  end
end
return n
"""

# By the name ``RedisJobStore._run`` calls them with.
SCRIPTS: dict[str, str] = {
    "create": CREATE,
    "update": UPDATE,
    "claim": CLAIM,
    "cancel": CANCEL,
    "withdraw": WITHDRAW,
    "index_unowned": INDEX_UNOWNED,
}
