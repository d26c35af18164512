-- mtls-authz verdict cache for Envoy's Lua filter: a returning client is answered inside Envoy.
--
-- Key: the client certificate's SHA-256 plus the route's policy name (route metadata
-- filter_metadata["envoy.filters.http.lua"].policy, set beside the ext_authz context extension;
-- "default" when absent). A fresh hit replays mtls-authz's verdict: the upstream headers it
-- sets (client-sent copies replaced) and removes, or its refusal with the same status, body
-- and reason header. A miss marks the request (dynamic metadata mtls_authz.verdict_cache/check)
-- so that ext_authz, enabled by that mark, runs; the response path stores the verdict from
-- ext_authz's dynamic metadata, for its ttl (never when the ttl is 0 or the metadata is absent).
-- One cache per Envoy worker, at most MAX_ENTRIES entries (the oldest go first).

local MAX_ENTRIES = 10000
local cache = {}     -- key -> {expires = seconds, verdict = table}
local order = {}     -- insertion order, for eviction
local first, last = 1, 0

local function cache_key(handle)
  local ssl = handle:streamInfo():downstreamSslConnection()
  if ssl == nil then return nil end
  local digest = ssl:sha256PeerCertificateDigest()
  if digest == nil or digest == "" then return nil end
  local policy = handle:metadata():get("policy") or "default"
  return digest .. "|" .. policy
end

local function store(key, verdict, ttl)
  if cache[key] == nil then
    last = last + 1
    order[last] = key
    while last - first + 1 > MAX_ENTRIES do
      cache[order[first]] = nil
      order[first] = nil
      first = first + 1
    end
  end
  cache[key] = {expires = os.time() + ttl, verdict = verdict}
end

local function replay(handle, verdict)
  if verdict.decision == "allow" then
    local headers = handle:headers()
    for _, name in ipairs(verdict.remove or {}) do headers:remove(name) end
    for name, value in pairs(verdict.set or {}) do headers:replace(name, value) end
    return
  end
  handle:respond({
    [":status"] = tostring(math.floor(verdict.status)),
    ["content-type"] = "application/json",
    ["x-mtls-authz-reason"] = verdict.reason,
  }, verdict.body)
end

function envoy_on_request(handle)
  local key = cache_key(handle)
  if key ~= nil then
    local entry = cache[key]
    if entry ~= nil then
      if entry.expires > os.time() then
        replay(handle, entry.verdict)
        return
      end
      cache[key] = nil  -- expired: ask again
    end
  end
  handle:streamInfo():dynamicMetadata():set("mtls_authz.verdict_cache", "check", true)
end

function envoy_on_response(handle)
  local verdict = handle:streamInfo():dynamicMetadata():get("envoy.filters.http.ext_authz")
  if verdict == nil or verdict.ttl == nil or verdict.ttl <= 0 then return end
  local key = cache_key(handle)
  if key ~= nil then store(key, verdict, math.floor(verdict.ttl)) end
end
