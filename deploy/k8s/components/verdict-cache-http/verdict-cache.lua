-- mtls-authz verdict cache for Envoy's Lua filter: a returning client is answered inside Envoy.
--
-- Key: the client certificate's SHA-256 plus the policy the route names in its metadata,
-- filter_metadata["envoy.filters.http.lua"].policy ("default" for mtls-authz's top-level
-- policy). It must name the same policy as the route's ext_authz context extension; with
-- route_metadata_context_namespaces Envoy sends it to mtls-authz, which refuses the request
-- (policy_mismatch) when the two differ. A route that names no policy is never cached: this
-- script cannot see ext_authz's per-route or per-vhost settings, so it cannot know which policy
-- applies there.
--
-- A fresh hit replays mtls-authz's verdict: the upstream headers it sets (client-sent copies
-- replaced) and removes, or its refusal with the same status, body and reason header. Only an
-- allow replayed in full marks the request (dynamic metadata mtls_authz.verdict_cache/replayed);
-- ext_authz runs unless it sees that mark, so a miss, an error anywhere in this script, or the
-- filter being off all mean the request is checked as if there were no cache.
-- The first envoy-cached.yaml ran ext_authz only on the opposite mark, check = true: the script
-- sets it first thing on every request and clears it only for an allow replayed in full, so an
-- Envoy still on that config checks every request too (CHANGELOG.md, "Upgrading").
-- The response path stores the verdict from ext_authz's dynamic metadata for its ttl, and only
-- when mtls-authz decided it under the policy the key names. With ext_authz over gRPC the
-- metadata is the verdict itself; over HTTP (envoy-http.yaml) it is made of string headers
-- x-mtls-authz-cache-* (dynamic_metadata_from_headers), read back into the same shape.
-- One cache per Envoy worker, at most MAX_ENTRIES entries (the oldest go first).
--
-- The emergency block list: every GENERATION_EVERY_MS each worker asks mtls-authz (cluster
-- mtls_authz_ops, GET /blocks/generation) which block list is in force. When the answer changes,
-- every entry goes; when there is none (mtls-authz down, slow, or replicas that disagree), nothing
-- is replayed or stored until there is one. A verdict is stored only when it was decided under
-- the generation the worker knows. So no replayed allow outlives a block by more than
-- GENERATION_EVERY_MS plus one such call.

local MAX_ENTRIES = 10000
local GENERATION_CLUSTER = "mtls_authz_ops"
local GENERATION_EVERY_MS = 500
local GENERATION_TIMEOUT_MS = 250
local cache = {}     -- key -> {expires = seconds, verdict = table, slot = position in order}
local order = {}     -- slot -> key, in the order entries were stored
local first, last, count = 1, 0, 0
local generation = nil    -- the block list's generation the entries were stored under; nil: unknown
local asked_at = nil      -- when it was last asked (ms)

local function flush()
  cache, order, first, last, count = {}, {}, 1, 0, 0
end

-- The generation in force, asked at most every GENERATION_EVERY_MS; nil when it cannot be had.
local function current_generation(handle)
  local now = handle:timestamp()
  if asked_at ~= nil and now - asked_at < GENERATION_EVERY_MS then return generation end
  asked_at = now
  local ok, headers, body = pcall(handle.httpCall, handle, GENERATION_CLUSTER, {
    [":method"] = "GET", [":path"] = "/blocks/generation", [":authority"] = "mtls-authz",
  }, "", GENERATION_TIMEOUT_MS)
  local fresh = nil
  if ok and headers ~= nil and headers[":status"] == "200" and body ~= nil and body ~= "" then
    fresh = body
  end
  if fresh == nil or fresh ~= generation then flush() end
  generation = fresh
  return generation
end

local function forget(key)
  if cache[key] ~= nil then
    cache[key] = nil
    count = count - 1
  end
end

local function cache_key(handle)
  local policy = handle:metadata():get("policy")
  if type(policy) ~= "string" or policy == "" then return nil, nil end
  local ssl = handle:streamInfo():downstreamSslConnection()
  if ssl == nil then return nil, nil end
  local digest = ssl:sha256PeerCertificateDigest()
  if digest == nil or digest == "" then return nil, nil end
  return digest .. "|" .. policy, policy
end

-- Rebuild the order from the live entries (slots left by re-stored or forgotten keys go).
local function compact()
  local live = {}
  for key, entry in pairs(cache) do live[#live + 1] = {entry.slot, key} end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  order, first, last = {}, 1, 0
  for _, item in ipairs(live) do
    last = last + 1
    order[last] = item[2]
    cache[item[2]].slot = last
  end
end

-- From the oldest slot: drop slots whose key was stored again later or forgotten, entries past
-- their time, and live entries while there are more than MAX_ENTRIES.
local function trim(now)
  while first <= last do
    local key = order[first]
    local entry = cache[key]
    local current = entry ~= nil and entry.slot == first
    if current and entry.expires > now and count <= MAX_ENTRIES then return end
    if current then forget(key) end
    order[first] = nil
    first = first + 1
  end
end

local function store(key, verdict, ttl)
  local now = os.time()
  if cache[key] == nil then count = count + 1 end
  last = last + 1
  order[last] = key
  cache[key] = {expires = now + ttl, verdict = verdict, slot = last}
  trim(now)
  if last - first + 1 > 2 * MAX_ENTRIES then compact() end
end

-- HTTP mode: the verdict as x-mtls-authz-cache-* strings; nil when there is none.
local PREFIX = "x-mtls-authz-cache-"
local function from_headers(metadata)
  local ttl = tonumber(metadata[PREFIX .. "ttl"] or "")
  if ttl == nil then return nil end
  local verdict = {
    ttl = ttl,
    policy = metadata[PREFIX .. "policy"],
    generation = metadata[PREFIX .. "generation"],
    decision = metadata[PREFIX .. "decision"],
    status = tonumber(metadata[PREFIX .. "status"] or ""),
    body = metadata[PREFIX .. "body"],
    reason = metadata[PREFIX .. "reason"],
    set = {},
    remove = {},
  }
  for key, value in pairs(metadata) do
    local name = string.match(key, "^x%-mtls%-authz%-cache%-set%-(.+)$")
    if name ~= nil then verdict.set[name] = value end
  end
  for name in string.gmatch(metadata[PREFIX .. "remove"] or "", "[^,]+") do
    verdict.remove[#verdict.remove + 1] = name
  end
  return verdict
end

local function replay(handle, verdict)
  if verdict.decision == "allow" then
    local headers = handle:headers()
    for _, name in ipairs(verdict.remove or {}) do headers:remove(name) end
    for name, value in pairs(verdict.set or {}) do headers:replace(name, value) end
    local metadata = handle:streamInfo():dynamicMetadata()
    metadata:set("mtls_authz.verdict_cache", "replayed", true)
    metadata:set("mtls_authz.verdict_cache", "check", false)
    return
  end
  handle:respond({
    [":status"] = tostring(math.floor(verdict.status)),
    ["content-type"] = "application/json",
    ["x-mtls-authz-reason"] = verdict.reason,
  }, verdict.body)
end

function envoy_on_request(handle)
  -- Before anything that could fail: an older config checks only requests marked so.
  handle:streamInfo():dynamicMetadata():set("mtls_authz.verdict_cache", "check", true)
  local key = cache_key(handle)
  if key == nil then return end
  if current_generation(handle) == nil then return end  -- no block list known: replay nothing
  local entry = cache[key]
  if entry == nil then return end
  if entry.expires <= os.time() then
    forget(key)  -- expired: ask again
    return
  end
  replay(handle, entry.verdict)
end

function envoy_on_response(handle)
  local verdict = handle:streamInfo():dynamicMetadata():get("envoy.filters.http.ext_authz")
  if verdict ~= nil and verdict.ttl == nil then verdict = from_headers(verdict) end
  if verdict == nil or verdict.ttl == nil or verdict.ttl <= 0 then return end
  local key, policy = cache_key(handle)
  -- Only under the block list this worker knows to be in force (a replica that has not yet seen
  -- a new block must not have its allow replayed after the cache saw the block).
  if generation == nil or verdict.generation ~= generation then return end
  if key ~= nil and verdict.policy == policy then store(key, verdict, math.floor(verdict.ttl)) end
end
