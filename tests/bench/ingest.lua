-- wrk script: durable session revocations, each with a unique sid, as fast as wrk can send.
-- Used by tests/bench/ingest.sh; reads the admin key from REVOCAST_ADMIN_KEY.
local key = os.getenv("REVOCAST_ADMIN_KEY")
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

function init(args)
  n = 0
  run = tostring(os.time())
end

function request()
  n = n + 1
  local body = string.format('{"sid":"bench-%s-%d-%d"}', run, id, n)
  return wrk.format("POST", "/v1/revoke/session",
    { ["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  if status ~= 200 then
    errors = (errors or 0) + 1
  end
end
