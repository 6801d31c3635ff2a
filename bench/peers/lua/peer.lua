-- The nginx + Lua validating peer (bench/run.sh, bench/callgrind.sh): what a team running
-- nginx with lua-nginx-module would write in front of Flextell's POST /v1/conversations,
-- with the JSON Schema validator APISIX uses (api7's `jsonschema`, vendored under vendor/
-- because it is published only on LuaRocks; see vendor/README.md).
--
-- Checks, in order, each answered with schemagate's envelope:
--   1. `Authorization: Bearer <token>` present          -> 401 (no key lookup: presence only)
--   2. `X-Tenant` an integer                            -> 422
--   3. the body is JSON                                 -> 400
--   4. the body against schemas/flextell/create_conversation.body.json -> 422, first error only
-- A request that passes goes on to `proxy_pass` (nginx.conf's upstream keepalive pool).
--
-- `init` runs once in init_by_lua (the schema compiled to a Lua function, as APISIX caches
-- it); `check` runs in the access phase of every request.
local cjson = require("cjson.safe")
local jsonschema = require("jsonschema")

local ngx = ngx
local find = string.find

local _M = {}
local validator

-- Reads and compiles the body schema. Failing here stops nginx at start-up, which is where
-- a bad schema should be seen.
function _M.init(schema_path)
  local file = assert(io.open(schema_path, "rb"))
  local text = file:read("*a")
  file:close()
  local schema = assert(cjson.decode(text), "the body schema is not JSON")
  -- The file names draft 2020-12; the keywords it uses (type lists, required, minimum,
  -- maxLength) mean the same in draft 7, the newest this validator implements.
  schema["$schema"] = nil
  validator = jsonschema.generate_validator(schema)
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
  local ok, problem = validator(value)
  if not ok then
    return reject(422, "Unprocessable Entity", { "body: " .. tostring(problem) })
  end
end

return _M
