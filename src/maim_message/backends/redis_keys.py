"""Redis key layout and Lua scripts of the cluster backend (no I/O here).

Keys (``p`` = ``cluster_prefix``; ``<pair>`` = a hash of (user, platform), so no user id,
which may be an API key, shows up in key names):

- ``p:alive:<node>``  the process's incarnation, with a TTL, refreshed by its heartbeat
- ``p:nodes``         set of node ids that joined (a dead one is reaped by a survivor)
- ``p:conns:<node>``  hash uuid -> JSON info of the node's connections (presence; ``pk`` is
                      the pair hash, ``uk`` a hash of the user id)
- ``p:w:<pair>``      hash uuid -> node: where the pair's connections are
- ``p:s:<pair>``      stream: the pair's unacked messages (an entry's fields: msg_id ->
                      payload, one per message; a send batch's messages share an entry)
- ``p:i:<pair>``      hash msg_id -> stream id (``id|origin`` when the origin awaits the ack)
- ``p:f:<bucket>``   hash frame token -> ``h`` (handled) or ``@<node>`` (claimed: being
                      handled there), one per ``cluster_dedupe_ttl`` time bucket
- ``p:admin``         set of admin actions kept for good (revoked keys, as SHA-256), applied
                      by every node when it starts
- ``p:fo``            stream: the fan-out log (field ``m``: the fan-out as published), so a
                      node whose channel was away reads what it missed (``fanout_log``)

Channels: ``p:n:<node>`` (messages for one node) and ``p:all`` (fan-outs); what travels
on them is defined in ``pubsub_messages`` (the scripts build the same JSON objects).
Scripts touch keys they do not declare (alive keys, channels): a single Redis (or a
primary with replicas / Sentinel), not Redis Cluster.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Dict, Tuple

from .cluster_base import Pair, user_key
from .resp_pack import bulk


class Keys:
    __slots__ = ("_packed", "_pairs", "admin", "alive_prefix", "all_channel", "chan_prefix",
                 "fanout_log", "nodes", "prefix")

    def __init__(self, prefix: str) -> None:
        self._pairs: Dict[Pair, Tuple[str, str, str]] = {}
        self._packed: Dict[Pair, Tuple[bytes, bytes]] = {}
        self.prefix = prefix
        self.alive_prefix = f"{prefix}:alive:"
        self.chan_prefix = f"{prefix}:n:"
        self.nodes = f"{prefix}:nodes"
        self.all_channel = f"{prefix}:all"
        self.admin = f"{prefix}:admin"
        self.fanout_log = f"{prefix}:fo"

    @staticmethod
    def pair_id(pair: Pair) -> str:
        user, platform = pair
        return blake2b(f"{user}\x00{platform}".encode(), digest_size=12).hexdigest()

    user_key = staticmethod(user_key)

    def alive(self, node: str) -> str:
        return self.alive_prefix + node

    def channel(self, node: str) -> str:
        return self.chan_prefix + node

    def conns(self, node: str) -> str:
        return f"{self.prefix}:conns:{node}"

    def pair_keys(self, pair: Pair) -> Tuple[str, str, str]:
        """(stream, index, where) of a pair, cached (bounded)."""
        keys = self._pairs.get(pair)
        if keys is None:
            if len(self._pairs) >= 100_000:
                self._pairs.clear()
            pid = self.pair_id(pair)
            p = self.prefix
            keys = self._pairs[pair] = (f"{p}:s:{pid}", f"{p}:i:{pid}", f"{p}:w:{pid}")
        return keys

    def packed(self, pair: Pair) -> Tuple[bytes, bytes]:
        """(stream, where) of a pair as RESP bulk strings (the send batch writes them per
        pair and batch), cached (bounded)."""
        packed = self._packed.get(pair)
        if packed is None:
            if len(self._packed) >= 100_000:
                self._packed.clear()
            stream, _index, where = self.pair_keys(pair)
            packed = self._packed[pair] = (bulk(stream.encode()), bulk(where.encode()))
        return packed

    def where(self, pair: Pair) -> str:
        return self.pair_keys(pair)[2]

    def stream(self, pair: Pair) -> str:
        return self.pair_keys(pair)[0]

    def index(self, pair: Pair) -> str:
        return self.pair_keys(pair)[1]


# KEYS: stream, index. ARGV: msg_id, payload, max entries, ttl ms. Idempotent append (a
# fan-out reaching a pair held on two nodes is stored once). Returns the id or false.
ADD_ONCE = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return false end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], id)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return id
"""

# KEYS: stream, index. ARGV: 1 channel prefix ("": removed, not acked: nobody is told),
# 2 acking node, 3 user, 4 platform, 5 uuid, 6.. msg_ids. Deletes acked entries; tells an
# origin that waits for the ack; deletes the keys once the stream is empty. Returns how
# many entries were deleted.
ACK = """
local n = 0
for i = 6, #ARGV do
  local v = redis.call('HGET', KEYS[2], ARGV[i])
  if v then
    redis.call('HDEL', KEYS[2], ARGV[i])
    local bar = string.find(v, '|', 1, true)
    local id = v
    if bar then
      id = string.sub(v, 1, bar - 1)
      if ARGV[1] ~= '' then
        redis.call('PUBLISH', ARGV[1] .. string.sub(v, bar + 1),
          cjson.encode({type = 'ack', node = ARGV[2], user = ARGV[3], platform = ARGV[4],
            msg_id = ARGV[i], uuid = ARGV[5]}))
      end
    end
    n = n + redis.call('XDEL', KEYS[1], id)
  end
end
if redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[1], KEYS[2]) end
return n
"""

# ARGV: current bucket, previous bucket (hashes: token -> 'h' handled, 's@' .. claimant:
# that node's handler stored its first send and still runs, or '@' .. claimant: that node
# claimed it and is handling it; a claimant is node id, NUL, incarnation: alive while the
# node's alive key holds that incarnation, so a node restarted under the same id does not
# keep its previous life's claims; a claimant without NUL, from an earlier version, is
# alive while its node's alive key exists), bucket ttl ms, this claimant, alive-key prefix, this
# shard's index, the number of shards (0: this node does not claim), frame tokens (hex).
# Answers one string, a character per frame: '1' handled, '2' claimed by another live
# node, else '0' (and claimed for this node when this shard is the frame's home: its
# first 8 hex digits modulo the number of shards; a Redis that refuses writes, out of
# memory, still answers, unclaimed). Claims live on the home shard only, so only it can
# answer '2'; a node that does not claim still waits for other nodes' claims.
CHECK_FRAMES = """
local node, alive, nul = ARGV[4], ARGV[5], string.char(0)
local shard, shards = tonumber(ARGV[6]), tonumber(ARGV[7])
local a = redis.call('HMGET', ARGV[1], unpack(ARGV, 8))
local b = redis.call('HMGET', ARGV[2], unpack(ARGV, 8))
local out, claim = {}, {}
for i = 1, #a do
  local va, vb = a[i], b[i]
  if va == 'h' or vb == 'h' then
    out[i] = '1'
  else
    local v = va or vb
    local started = v and string.sub(v, 1, 2) == 's@'
    local owner = v and string.sub(v, started and 3 or 2)
    local live = false
    if v and owner ~= node then
      local sep = string.find(owner, nul, 1, true)
      local name = sep and string.sub(owner, 1, sep - 1) or owner
      local now = redis.call('GET', alive .. name)
      live = now and (not sep or now == string.sub(owner, sep + 1))
    end
    if live then
      out[i] = '2'
    elseif started then
      out[i] = '1'  -- its first send was stored and its node is gone (or it is this one)
    else
      out[i] = '0'
      local token = ARGV[7 + i]
      if shards == 1 or
          (shards > 1 and tonumber(string.sub(token, 1, 8), 16) % shards == shard) then
        claim[#claim + 1] = token
        claim[#claim + 1] = '@' .. node
      end
    end
  end
end
if #claim > 0 then  -- refused (out of memory): the answer stands, without the claims
  if type(redis.pcall('HSET', ARGV[1], unpack(claim))) == 'number' then
    redis.pcall('PEXPIRE', ARGV[1], ARGV[3])
  end
end
return table.concat(out)
"""

# ARGV: current bucket, previous bucket, frame token, then the values that may be taken
# back (this node's claim, its record): a frame's entry is deleted only when it holds one
# of them, never when another node recorded the frame.
UNMARK_FRAME = """
for b = 1, 2 do
  local v = redis.call('HGET', ARGV[b], ARGV[3])
  if v then
    for i = 4, #ARGV do
      if v == ARGV[i] then
        redis.call('HDEL', ARGV[b], ARGV[3])
        break
      end
    end
  end
end
return 0
"""

# KEYS: where. ARGV: uuid, node. Forget a connection only if this node still owns it (the
# client may already have reconnected to another node with the same uuid).
UNREGISTER = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

# KEYS: conns of the dead node, nodes set. ARGV: node, alive key. Removes a dead node's
# connection hash and membership (its where-entries are removed per shard first, by
# REAP_WHERE). A node that comes back to life re-registers everything on its next heartbeat.
REAP = """
if redis.call('EXISTS', ARGV[2]) == 1 then return -1 end
local n = redis.call('HLEN', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return n
"""

# ARGV: dead node, its alive key, then (where key, uuid) pairs: forget the uuids the dead
# node still owns, unless it is alive again (it came back from a pause and re-registered
# them: its alive key is on every shard) -> -1.
REAP_WHERE = """
if redis.call('EXISTS', ARGV[2]) == 1 then return -1 end
for i = 3, #ARGV, 2 do
  if redis.call('HGET', ARGV[i], ARGV[i + 1]) == ARGV[1] then
    redis.call('HDEL', ARGV[i], ARGV[i + 1])
  end
end
return 0
"""

# ARGV: (stream, index) per pair whose connections are all gone and whose acked entries
# were just deleted: drop both keys once the stream is empty (nothing left to re-send).
DROP_EMPTY = """
for i = 1, #ARGV, 2 do
  if redis.call('XLEN', ARGV[i]) == 0 then redis.call('DEL', ARGV[i], ARGV[i + 1]) end
end
return 0
"""

# KEYS: the fan-out log. ARGV: 1 channel, 2 max entries, 3 ttl ms, 4 the oldest entry id
# to keep (ms), 5 the encoded fan-out (a JSON head, then a newline and the payload). Logs it
# and publishes it with its log id (the head's "log" field) in one step: the ids arrive in
# log order, and a logged fan-out was published. A Redis that refuses the write (out of
# memory, a read-only replica) still publishes it, without a log id (then returns false).
LOG_FANOUT = r"""
local id = redis.pcall('XADD', KEYS[1], 'MINID', '~', ARGV[4], '*', 'm', ARGV[5])
if type(id) ~= 'string' then
  redis.call('PUBLISH', ARGV[1], ARGV[5])
  return false
end
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local msg = ARGV[5]
local nl = string.find(msg, '\n', 1, true)
local head, rest = msg, ''
if nl then
  head = string.sub(msg, 1, nl - 1)
  rest = string.sub(msg, nl)
end
redis.call('PUBLISH', ARGV[1], string.sub(head, 1, -2) .. ',"log":"' .. id .. '"}' .. rest)
return id
"""
