-- wrk script speaking KV Connect over HTTP/1.1 (protobuf bodies built in Lua;
-- point reads and lists reuse one prebuilt request per start key).
-- The metadata exchange is done once by bench/run.sh; the data-plane token comes in KV_TOKEN.
--   KV_OP     read | write | mixed | list | cas
--   KV_KEYS   existing keys ["<KV_PREFIX>", "%08d"] to read (random, uniform)
--   KV_PREFIX prefix of the read set (default "r")
--   KV_VALUE  value size in bytes for writes (default 100)
--   KV_HOT    number of hot keys ["hot", "%08d"] for cas (default 16)
-- done() prints one JSON line: requests/s, p50/p99 in ms, non-2xx and socket errors,
-- and for cas the number of check-and-set writes and how many failed their check.

local op = os.getenv("KV_OP") or "read"
local nkeys = tonumber(os.getenv("KV_KEYS") or "10000")
local prefix = os.getenv("KV_PREFIX") or "r"
local vsize = tonumber(os.getenv("KV_VALUE") or "100")
local nhot = tonumber(os.getenv("KV_HOT") or "16")
local token = os.getenv("KV_TOKEN") or error("KV_TOKEN not set")

local char, concat, floor, random = string.char, table.concat, math.floor, math.random

local function varint(n)
  local t = {}
  while n >= 128 do t[#t + 1] = char(n % 128 + 128); n = floor(n / 128) end
  t[#t + 1] = char(n)
  return concat(t)
end
local function fbytes(num, s) return varint(num * 8 + 2) .. varint(#s) .. s end
local function fvarint(num, n) return varint(num * 8) .. varint(n) end

local function key(p, part) return "\2" .. p .. "\0\2" .. part .. "\0" end
local function rkey(p, i) return key(p, string.format("%08d", i)) end

local function read_body(k, e, limit)
  return fbytes(1, fbytes(1, k) .. fbytes(2, e or (k .. "\0")) .. fvarint(3, limit or 1))
end
local value = string.rep("x", vsize)
local function set_mut(k) return fbytes(2, fbytes(1, k) .. fbytes(2, fbytes(1, value) .. fvarint(2, 3)) .. fvarint(3, 1)) end
local function write_body(k, check_vs)
  local checks = ""
  if check_vs ~= nil then checks = fbytes(1, fbytes(1, k) .. (check_vs ~= "" and fbytes(2, check_vs) or "")) end
  return checks .. set_mut(k)
end

-- minimal protobuf reader: calls f(field, wiretype, value) for each field of s
local function fields(s, f)
  local i, n = 1, #s
  while i <= n do
    local tag, shift = 0, 1
    repeat local b = s:byte(i); i = i + 1; tag = tag + (b % 128) * shift; shift = shift * 128 until b < 128
    local fnum, wt = floor(tag / 8), tag % 8
    if wt == 0 then
      local v; v, shift = 0, 1
      repeat local b = s:byte(i); i = i + 1; v = v + (b % 128) * shift; shift = shift * 128 until b < 128
      f(fnum, wt, v)
    elseif wt == 2 then
      local len; len, shift = 0, 1
      repeat local b = s:byte(i); i = i + 1; len = len + (b % 128) * shift; shift = shift * 128 until b < 128
      f(fnum, wt, s:sub(i, i + len - 1)); i = i + len
    elseif wt == 1 then i = i + 8
    elseif wt == 5 then i = i + 4
    else return end
  end
end

local hdrs = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/x-protobuf" }
local READ, WRITE = "/v2/snapshot_read", "/v2/atomic_write"

local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  threads[#threads + 1] = thread
end

cas_writes, cas_conflicts, serial = 0, 0, 0
local vs_cache = {}   -- cas: hot key → versionstamp last read (nil: read it first)

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919 + floor(os.clock() * 1e6))
end

local function new_key()
  serial = serial + 1
  return key("w", string.format("%d-%d-%08x%08x", tid or 0, serial, random(0, 0x7fffffff), random(0, 0x7fffffff)))
end

-- Point-read requests are built once per key and reused, so the load
-- generator spends its CPU on the wire rather than in Lua (as
-- redis-benchmark does); writes still build a new key per request.
local read_reqs, list_reqs = {}, {}
local function read_request(i)
  local r = read_reqs[i]
  if r == nil then r = wrk.format("POST", READ, hdrs, read_body(rkey(prefix, i))); read_reqs[i] = r end
  return r
end

function request()
  if op == "read" or (op == "mixed" and random() < 0.9) then
    return read_request(random(0, nkeys - 1))
  elseif op == "write" or op == "mixed" then
    return wrk.format("POST", WRITE, hdrs, write_body(new_key()))
  elseif op == "list" then
    local s = random(0, math.max(0, nkeys - 100))
    local r = list_reqs[s]
    if r == nil then
      r = wrk.format("POST", READ, hdrs, read_body(rkey(prefix, s), "\2" .. prefix .. "\0\3", 100)); list_reqs[s] = r
    end
    return r
  elseif op == "cas" then
    -- optimistic check-and-set loop on shared hot keys: read the versionstamp,
    -- then write with a check on it; a failed check means another client won.
    local h = random(0, nhot - 1)
    local vs = vs_cache[h]
    if vs == nil then return wrk.format("POST", READ, hdrs, read_body(rkey("hot", h))) end
    vs_cache[h] = nil
    cas_writes = cas_writes + 1
    return wrk.format("POST", WRITE, hdrs, write_body(rkey("hot", h), vs))
  end
end

if op == "cas" then
  function response(status, headers, body)
    if status ~= 200 or body == nil or #body == 0 then return end
    if body:byte(1) == 8 then   -- AtomicWriteOutput: field 1 = status varint
      fields(body, function(f, wt, v) if f == 1 and v == 2 then cas_conflicts = cas_conflicts + 1 end end)
    else                        -- SnapshotReadOutput → ranges → values (KvEntry key=1, versionstamp=4)
      fields(body, function(f, wt, r)
        if f ~= 1 or wt ~= 2 then return end
        fields(r, function(f2, wt2, e)
          if f2 ~= 1 or wt2 ~= 2 then return end
          local k, vs
          fields(e, function(f3, wt3, v) if f3 == 1 then k = v elseif f3 == 4 then vs = v end end)
          local h = k and tonumber(k:match("^\2hot%z\2(%d+)%z$"))
          if h ~= nil and vs ~= nil then vs_cache[h] = vs end
        end)
      end)
    end
  end
end

function done(summary, latency, requests)
  local w, c = 0, 0
  for _, t in ipairs(threads) do w = w + (t:get("cas_writes") or 0); c = c + (t:get("cas_conflicts") or 0) end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    '{"ops_per_s": %d, "p50_ms": %.3f, "p99_ms": %.3f, "requests": %d, "errors": %d, "cas_writes": %d, "cas_conflicts": %d, "cas_commits_per_s": %d}\n',
    floor(summary.requests / secs + 0.5), latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests,
    e.status + e.connect + e.read + e.write + e.timeout, w, c, floor((w - c) / secs + 0.5)))
end
