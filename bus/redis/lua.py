"""Server-side scripts: each bus operation that must be atomic is one Lua script.

Why Lua: routing (is anyone subscribed?), backpressure (is the stream full?), the
wiretap copy and the write itself must happen in one step, or a publisher could
write to a stream whose last subscriber just left, or overfill it. Scripts build
key names from the prefix exactly like :class:`bus.redis.settings.Keys`, so they
need a standalone Redis (not a cluster).
"""

from __future__ import annotations

PRECLAIM_MS = 60_000
"""Lifetime of a claim made at publish time: until a consumer reads the entry and its
heartbeat renews the claim as a lease. Consumers trust it only for entries young enough
(``consumer.preclaim_horizon_ms``); an older entry goes through ``CLAIM`` as before, so a
long backlog costs one round trip, never a second run of a handler."""

_COMMON = r"""
local P = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function idlt(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end

local function field(list, name)
  for i = 1, #list, 2 do
    if list[i] == name then return list[i + 1] end
  end
end

-- Drop only entries every group has acknowledged: older than each group's oldest
-- pending entry and not after its last-delivered id. A stream without groups has
-- no reader left, so it is emptied (and deleted).
local function safe_trim(key)
  local groups = redis.call('XINFO', 'GROUPS', key)
  local floor = nil
  for _, g in ipairs(groups) do
    local point = field(g, 'last-delivered-id')
    if field(g, 'pending') > 0 then
      local summary = redis.call('XPENDING', key, field(g, 'name'))
      if idlt(summary[2], point) then point = summary[2] end
    end
    if floor == nil or idlt(point, floor) then floor = point end
  end
  if floor == nil then
    redis.call('DEL', key)
    return 0
  end
  redis.call('XTRIM', key, 'MINID', floor)
  return redis.call('XLEN', key)
end
"""

PUBLISH = (
    _COMMON
    + r"""
-- ARGV: prefix, recipient, kind, payload, max_len, tap_max_len,
--       ack_stream, ack_group, ack_entry, done_key, done_ttl_ms
local rcpt, kind, payload = ARGV[2], ARGV[3], ARGV[4]
local maxlen, tapcap = tonumber(ARGV[5]), tonumber(ARGV[6])
local targets = {}
local status = 'ok'
if kind == 'reply' or kind == 'error' then
  if string.sub(rcpt, 1, 7) == '_inbox.' then
    local key = P .. ':inbox:' .. string.sub(rcpt, 8)
    if redis.call('EXISTS', key) == 1 then targets[1] = key else status = 'gone' end
  else
    status = 'gone'
  end
else
  if redis.call('ZCOUNT', P .. ':r:' .. rcpt, now, '+inf') > 0 then
    targets[#targets + 1] = P .. ':s:' .. rcpt
  end
  local seen = {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', P .. ':pat', now, '+inf')) do
    local lua, glob = string.match(m, '^([^\31]*)\31([^\31]*)\31')
    if lua and not seen[glob] and string.find(rcpt, lua) then
      seen[glob] = true
      targets[#targets + 1] = P .. ':p:' .. glob
    end
  end
  if #targets == 0 then
    if kind == 'request' then status = 'no_route' else status = 'undeliverable' end
  end
end
for _, key in ipairs(targets) do
  if redis.call('XLEN', key) >= maxlen and safe_trim(key) >= maxlen then
    return {'full', key}
  end
end
if redis.call('ZCOUNT', P .. ':taps', now, '+inf') > 0 then
  redis.call('XADD', P .. ':tap', 'MAXLEN', '~', tapcap, '*', 'e', payload)
end
-- Work entries are pre-claimed for every group of their stream (the claim a consumer
-- would otherwise make after reading, one round trip later), unless some group
-- already holds a claim or a done marker for this envelope id: then the entry goes
-- out unmarked and the consumer's CLAIM script sorts it out. Field 'c' (= the
-- envelope id) tells consumers the claim is theirs already.
local id = nil
if kind == 'request' or kind == 'event' then id = string.match(payload, '^{"id":"([^"\\]+)"') end
for _, key in ipairs(targets) do
  local claims = {}
  if id then
    local groups = redis.pcall('XINFO', 'GROUPS', key)
    if groups.err then groups = {} end
    for _, g in ipairs(groups) do
      local dedup = P .. ':d:' .. field(g, 'name') .. ':' .. id
      if redis.call('EXISTS', dedup) == 1 then
        claims = nil
        break
      end
      claims[#claims + 1] = dedup
    end
  end
  if claims and #claims > 0 then
    local entry = redis.call('XADD', key, '*', 'e', payload, 'c', id)
    for _, dedup in ipairs(claims) do
      redis.call('SET', dedup, 'run\31' .. key .. '/' .. entry .. '\31', 'PX', PRECLAIM_MS)
    end
  else
    redis.call('XADD', key, '*', 'e', payload)
  end
end
if ARGV[7] ~= '' then
  redis.call('SET', ARGV[10], 'done', 'PX', ARGV[11])
  redis.call('XACK', ARGV[7], ARGV[8], ARGV[9])
end
return {status, #targets}
"""
)

PUBLISH = PUBLISH.replace("PRECLAIM_MS", str(PRECLAIM_MS))

CLAIM = r"""
-- KEYS: dedup keys. ARGV[1]: claim ttl ms; ARGV[1+i]: 'run' SEP <stream>/<entry> SEP <consumer>.
-- claimed: handle it. done: already handled, ack. busy: another entry with the same
-- envelope id is being handled (it carries the work), ack this copy.
local out = {}
for i, key in ipairs(KEYS) do
  local mine = ARGV[i + 1]
  local v = redis.call('GET', key)
  if not v then
    redis.call('SET', key, mine, 'PX', ARGV[1])
    out[i] = 'claimed'
  elseif v == 'done' then
    out[i] = 'done'
  elseif string.match(v, '^run\31([^\31]*)\31') == string.match(mine, '^run\31([^\31]*)\31') then
    -- the same stream entry came back: its holder stopped renewing the lease, so it is dead
    redis.call('SET', key, mine, 'PX', ARGV[1])
    out[i] = 'claimed'
  else
    out[i] = 'busy'
  end
end
return out
"""

REGISTER = (
    _COMMON
    + r"""
-- ARGV: prefix, ttl_ms, inbox_key (or ''), then groups of 6:
--   zset, member, stream ('' for none), group, start id, group grace ms (-1: no group entry)
local ttl = tonumber(ARGV[2])
if ARGV[3] ~= '' then
  redis.pcall('XGROUP', 'CREATE', ARGV[3], 'inbox', '0', 'MKSTREAM')
  redis.call('PEXPIRE', ARGV[3], ttl)
end
local i = 4
while i <= #ARGV do
  local zset, member, stream = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local group, start, grace = ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5])
  if stream ~= '' then
    redis.pcall('XGROUP', 'CREATE', stream, group, start, 'MKSTREAM')
    redis.call('SADD', P .. ':streams', stream)
    if grace >= 0 then
      redis.call('ZADD', P .. ':groups', 'GT', now + ttl + grace, stream .. '\31' .. group)
    end
  end
  redis.call('ZADD', zset, now + ttl, member)
  i = i + 6
end
return now
"""
)

JANITOR = (
    _COMMON
    + r"""
-- ARGV: prefix, idle ms after which a consumer with nothing pending is dropped. KEYS: own inbox.
-- Forget expired registrations, destroy groups nobody renewed, trim every known stream.
redis.call('ZREMRANGEBYSCORE', P .. ':pat', '-inf', '(' .. now)
redis.call('ZREMRANGEBYSCORE', P .. ':taps', '-inf', '(' .. now)
local destroyed = 0
for _, m in ipairs(redis.call('ZRANGEBYSCORE', P .. ':groups', '-inf', '(' .. now)) do
  local stream, group = string.match(m, '^([^\31]*)\31(.*)$')
  if stream then
    redis.pcall('XGROUP', 'DESTROY', stream, group)
    destroyed = destroyed + 1
  end
  redis.call('ZREM', P .. ':groups', m)
end
local trimmed = 0
local addr_prefix = P .. ':s:'
for _, s in ipairs(redis.call('SMEMBERS', P .. ':streams')) do
  if string.sub(s, 1, #addr_prefix) == addr_prefix then
    redis.call('ZREMRANGEBYSCORE', P .. ':r:' .. string.sub(s, #addr_prefix + 1), '-inf', '(' .. now)
  end
  if redis.call('EXISTS', s) == 0 then
    redis.call('SREM', P .. ':streams', s)
  else
    -- consumers with nothing pending are dropped (XREADGROUP recreates a live one), so
    -- every process that ever subscribed does not leave a consumer behind forever
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', s)) do
      local group = field(g, 'name')
      for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', s, group)) do
        if field(c, 'pending') == 0 and field(c, 'idle') > tonumber(ARGV[2]) then
          redis.call('XGROUP', 'DELCONSUMER', s, group, field(c, 'name'))
        end
      end
    end
    local before = redis.call('XLEN', s)
    local after = safe_trim(s)
    trimmed = trimmed + before - after
    if redis.call('EXISTS', s) == 0 then redis.call('SREM', P .. ':streams', s) end
  end
end
for _, inbox in ipairs(KEYS) do
  if redis.call('EXISTS', inbox) == 1 then
    local owner = redis.call('XINFO', 'GROUPS', inbox)[1]
    if owner then redis.call('XTRIM', inbox, 'MINID', field(owner, 'last-delivered-id')) end
  end
end
return {destroyed, trimmed}
"""
)


def publish_args(
    prefix: str,
    route: str,
    kind: str,
    payload: str,
    max_len: int,
    tap_max_len: int,
    ack: tuple[str, str, str, str] | None = None,
    done_ttl_ms: int = 0,
) -> list[str | int]:
    """ARGV of :data:`PUBLISH`, in the order the script reads them.

    ``ack`` is ``(stream, group, entry id, dedup key)`` of the request a reply settles:
    the script then also marks the envelope done (for ``done_ttl_ms``) and acks the entry.
    """
    head: list[str | int] = [prefix, route, kind, payload, max_len, tap_max_len]
    if ack is None:
        return [*head, "", "", "", "", 0]
    return [*head, *ack, done_ttl_ms]


def glob_to_lua(glob: str) -> str:
    """Translate an fnmatch glob (``*``, ``?``, ``[seq]``, ``[!seq]``) into an anchored Lua pattern.

    The publish script matches recipients against pattern subscriptions inside
    Redis, so the glob must mean there exactly what ``fnmatch`` means in Python.
    """
    out = ["^"]
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i + 1
            if j < n and glob[j] == "!":
                j += 1
            if j < n and glob[j] == "]":
                j += 1
            j = glob.find("]", j)
            if j == -1:
                out.append("%[")
            else:
                body = glob[i + 1 : j]
                negate = body.startswith("!")
                out.append("[" + ("^" if negate else "") + _lua_set(body[1:] if negate else body) + "]")
                i = j
        elif c.isascii() and c.isalnum():
            out.append(c)
        else:
            out.append("%" + c)
        i += 1
    out.append("$")
    return "".join(out)


def _lua_set(body: str) -> str:
    """A set body: ``a-z`` ranges kept, every other punctuation escaped with ``%``."""
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if i + 2 < len(body) and body[i + 1] == "-":
            out.append(_lua_char(c) + "-" + _lua_char(body[i + 2]))
            i += 3
            continue
        out.append(_lua_char(c))
        i += 1
    return "".join(out)


def _lua_char(c: str) -> str:
    return c if c.isascii() and c.isalnum() else "%" + c
