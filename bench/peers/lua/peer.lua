-- The nginx + Lua validating peer (bench/run.sh, bench/callgrind.sh): what a team running
-- nginx with lua-nginx-module would write in front of Flextell's POST /v1/conversations.
--
-- The body check is written by hand: it is what a JSON Schema validator compiles
-- schemas/flextell/create_conversation.body.json to (api7's `jsonschema`, the one APISIX
-- uses, generates Lua of this shape), not that validator itself, which is published only on
-- LuaRocks (unreachable from these machines) and is not copied into this repository.
-- `init` reads the schema file and refuses to start when it no longer says what this check
-- implements, so the two cannot drift apart silently.
--
-- Checks, in order, each answered with schemagate's envelope:
--   1. `Authorization: Bearer <token>` present          -> 401 (no key lookup: presence only)
--   2. `X-Tenant` an integer                            -> 422
--   3. the body is a JSON object                        -> 400
--   4. the body against the schema                      -> 422, first error only
-- A request that passes goes on to `proxy_pass` (nginx.conf's upstream keepalive pool).
local cjson = require("cjson.safe")

local ngx = ngx
local find, gsub, floor = string.find, string.gsub, math.floor
local null = cjson.null

local _M = {}

-- Checks that the schema file is the one this peer's check implements.
function _M.init(schema_path)
  local file = assert(io.open(schema_path, "rb"))
  local text = file:read("*a")
  file:close()
  local s = assert(cjson.decode(text), "the body schema is not JSON")
  local p = s.properties or {}
  local function is_name(t, want)
    if type(t) ~= "table" then return false end
    local n = 0
    for _ in pairs(t) do n = n + 1 end
    if n ~= #want then return false end
    for i, v in ipairs(want) do
      if t[i] ~= v then return false end
    end
    return true
  end
  assert(s.type == "object" and is_name(s.required, { "channel_id", "address" })
    and s.additionalProperties == nil
    and p.channel_id and p.channel_id.type == "integer" and p.channel_id.minimum == 1
    and p.address and p.address.type == "string" and p.address.maxLength == 255
    and p.first_name and is_name(p.first_name.type, { "string", "null" })
    and p.first_name.maxLength == 255
    and p.last_name and is_name(p.last_name.type, { "string", "null" })
    and p.last_name.maxLength == 255,
    schema_path .. " changed: update bench/peers/lua/peer.lua's hand-written check")
end

-- Whether `s` has more than `max` code points, as JSON Schema's maxLength counts. No more
-- bytes than that means no more code points; past it, every byte that does not continue a
-- UTF-8 sequence starts one (cjson has checked the UTF-8).
local function longer(s, max)
  if #s <= max then return false end
  local _, n = gsub(s, "[^\128-\191]", "")
  return n > max
end

local function optional_name(v, name)
  if v == nil or v == null then return nil end
  if type(v) ~= "string" then return name .. " must be a string or null" end
  if longer(v, 255) then return name .. " must be at most 255 characters" end
end

-- The body schema, compiled by hand; the first problem, or nil.
local function body_problem(v)
  -- cjson decodes arrays to tables too: an object has no element 1.
  if type(v) ~= "table" or v[1] ~= nil then return "body must be an object" end
  local id = v.channel_id
  if id == nil then return "body.channel_id is required" end
  if type(id) ~= "number" or id ~= floor(id) then return "body.channel_id must be an integer" end
  if id < 1 then return "body.channel_id must be >= 1" end
  local address = v.address
  if address == nil then return "body.address is required" end
  if type(address) ~= "string" then return "body.address must be a string" end
  if longer(address, 255) then return "body.address must be at most 255 characters" end
  return optional_name(v.first_name, "body.first_name")
    or optional_name(v.last_name, "body.last_name")
end

local function reject(status, err, message)
  local body = cjson.encode({ statusCode = status, message = message, error = err })
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  -- A length, not chunked: the answer schemagate gives, and what the callgrind client reads.
  ngx.header["Content-Length"] = #body
  ngx.print(body)
  return ngx.exit(status)
end

function _M.check()
  local auth = ngx.var.http_authorization
  if not auth or not find(auth, "^Bearer %S") then
    return reject(401, "Unauthorized", "missing or malformed bearer token")
  end
  local tenant = ngx.var.http_x_tenant
  if not tenant or not find(tenant, "^%-?%d+$") then
    return reject(422, "Unprocessable Entity", { "header.X-Tenant must be an integer" })
  end
  ngx.req.read_body()
  -- nil when the body was spilled to a temporary file (over client_body_buffer_size) or
  -- absent: either way not a body this route accepts.
  local body = ngx.req.get_body_data()
  local value = body and cjson.decode(body)
  if type(value) ~= "table" then
    return reject(400, "Bad Request", "the body is not a JSON object")
  end
  local problem = body_problem(value)
  if problem then
    return reject(422, "Unprocessable Entity", { problem })
  end
end

return _M
