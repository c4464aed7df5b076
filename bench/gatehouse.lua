-- wrk script of the Gatehouse load benchmark; bench/run.sh sets the environment it reads.
--
--   BENCH_SCENARIO   client_credentials | introspect | mint_tokens | introspect_once | authorize |
--                    code | refresh | portal
--   BENCH_THREADS    the -t given to wrk (input files are split between threads by line)
--   BENCH_TOKEN_PATH, BENCH_INTROSPECT_PATH   the two endpoints (default Gatehouse's
--                    /oauth2/token and /oauth2/introspect; oidc-provider's differ)
--   BENCH_SERVICE_BASIC, BENCH_APP_BASIC   base64(client_id:secret) of bench-service / bench-app
--   BENCH_TOKEN_FILE     introspect: the access token to introspect in every request
--   BENCH_TOKENS_OUT     mint_tokens: client-credentials grants, their access tokens into files
--   BENCH_TOKENS_FILE    introspect_once: access tokens, each introspected exactly once
--   BENCH_AUTHORIZE_PATH, BENCH_COOKIE, BENCH_CODES_OUT   authorize: mint codes into files
--   BENCH_COOKIE         portal: the signed-in browser whose portal page is fetched
--   BENCH_CODES_FILE, BENCH_VERIFIER   code: codes to redeem, each exactly once
--   BENCH_SEEDS_FILE     refresh: starting refresh tokens; every response's new refresh token
--                        is queued and presented once in a later request (never twice)
--   BENCH_DELAY_MS       client_credentials: wait this long before each request (an open-ish
--                        loop below the peak, for the soak run)
--
-- done() prints one parseable line:
--   RESULT scenario=… requests=… duration_s=… rps=… p50_ms=… p90_ms=… p99_ms=… max_ms=…
--          ok=… bad_status=… bad_body=… socket_errors=… exhausted=…
-- and, when anything failed, FIRST_ERROR <status> <body> of the first bad response per thread.

local scenario = os.getenv("BENCH_SCENARIO") or error("BENCH_SCENARIO is not set")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
local FORM = "application/x-www-form-urlencoded"
local REDIRECT_URI = "http%3A%2F%2F127.0.0.1%3A9%2Fcb"
local TOKEN_PATH = os.getenv("BENCH_TOKEN_PATH") or "/oauth2/token"
local INTROSPECT_PATH = os.getenv("BENCH_INTROSPECT_PATH") or "/oauth2/introspect"

-- Per-thread counters: globals, so done() (main state) reads them with thread:get().
ok, bad_status, bad_body, exhausted, first_error = 0, 0, 0, 0, ""

local function env(name)
  return os.getenv(name) or error(name .. " is not set")
end

-- The lines of a file that belong to this thread: line i goes to thread (i-1) % nthreads.
local function my_lines(path)
  local lines, i = {}, 0
  local f = assert(io.open(path, "r"))
  for line in f:lines() do
    if line ~= "" then
      if i % nthreads == id then lines[#lines + 1] = line end
      i = i + 1
    end
  end
  f:close()
  return lines
end

local function fail(kind, status, body)
  if kind == "status" then bad_status = bad_status + 1 else bad_body = bad_body + 1 end
  if first_error == "" then
    first_error = tostring(status) .. " " .. string.gsub(string.sub(body or "", 1, 400), "%s+", " ")
  end
end

-- The main state numbers the threads and keeps them for done().
local threads, next_id = {}, 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  threads[#threads + 1] = thread
end

local expect_status, expect_body = 200, nil
local on_ok = nil

-- A client-credentials grant of bench-service, as every request of the thread.
local function client_credentials_request()
  wrk.method = "POST"
  wrk.path = TOKEN_PATH
  wrk.headers["Authorization"] = "Basic " .. env("BENCH_SERVICE_BASIC")
  wrk.headers["Content-Type"] = FORM
  wrk.body = "grant_type=client_credentials&scope=api%3Aread"
end

-- A request function that presents each line of `lines` exactly once, as `prefix .. line`;
-- out of lines, the run is not valid any more: it stops and says so. (wrk sends dynamic
-- requests only when the script defines request() at load, so scenarios wrap it there.)
local function each_line_once(lines, prefix)
  local pos = 0
  return function()
    pos = pos + 1
    local line = lines[pos]
    if not line then
      exhausted = exhausted + 1
      wrk.thread:stop()
      return wrk.format("GET", "/healthz", {}, nil)
    end
    return wrk.format(nil, nil, nil, prefix .. line)
  end
end

if scenario == "client_credentials" then
  expect_body = '"access_token":"'
  init = client_credentials_request
  local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
  if pause > 0 then
    function delay() return pause end
  end

elseif scenario == "introspect" then
  expect_body = '"active":true'
  function init(args)
    local f = assert(io.open(env("BENCH_TOKEN_FILE"), "r"))
    local token = f:read("*l")
    f:close()
    wrk.method = "POST"
    wrk.path = INTROSPECT_PATH
    wrk.headers["Authorization"] = "Basic " .. env("BENCH_SERVICE_BASIC")
    wrk.headers["Content-Type"] = FORM
    wrk.body = "token=" .. token
  end

elseif scenario == "mint_tokens" then
  -- Client-credentials grants whose access tokens are kept, each to be introspected once.
  expect_body = '"access_token":"'
  local out
  function init(args)
    client_credentials_request()
    out = assert(io.open(env("BENCH_TOKENS_OUT") .. "." .. id, "w"))
    out:setvbuf("line")
  end
  on_ok = function(status, headers, body)
    local token = string.match(body, '"access_token":"([^"]+)"')
    if not token then return false end
    out:write(token, "\n")
    return true
  end

elseif scenario == "introspect_once" then
  -- Introspection of tokens the server has never seen: every request presents another one.
  expect_body = '"active":true'
  local next_request
  function init(args)
    next_request = each_line_once(my_lines(env("BENCH_TOKENS_FILE")), "token=")
    wrk.method = "POST"
    wrk.path = INTROSPECT_PATH
    wrk.headers["Authorization"] = "Basic " .. env("BENCH_SERVICE_BASIC")
    wrk.headers["Content-Type"] = FORM
  end
  function request() return next_request() end

elseif scenario == "authorize" then
  -- Mints authorization codes (the preparation of the code scenario, measured as a bonus).
  expect_status = 302
  local out
  function init(args)
    wrk.method = "GET"
    wrk.path = env("BENCH_AUTHORIZE_PATH")
    wrk.headers["Cookie"] = env("BENCH_COOKIE")
    out = assert(io.open(env("BENCH_CODES_OUT") .. "." .. id, "w"))
    out:setvbuf("line") -- wrk never closes a thread's state: write each line through
  end
  on_ok = function(status, headers, body)
    local location = headers["location"] or headers["Location"] or ""
    local code = string.match(location, "[?&]code=([^&]+)")
    if not code then return false end
    out:write(code, "\n")
    return true
  end

elseif scenario == "code" then
  expect_body = '"refresh_token":"'
  local next_request
  function init(args)
    local suffix = "&redirect_uri=" .. REDIRECT_URI .. "&code_verifier=" .. env("BENCH_VERIFIER")
    local codes = {}
    for i, code in ipairs(my_lines(env("BENCH_CODES_FILE"))) do codes[i] = code .. suffix end
    next_request = each_line_once(codes, "grant_type=authorization_code&code=")
    wrk.method = "POST"
    wrk.path = TOKEN_PATH
    wrk.headers["Authorization"] = "Basic " .. env("BENCH_APP_BASIC")
    wrk.headers["Content-Type"] = FORM
  end
  function request() return next_request() end

elseif scenario == "refresh" then
  -- A FIFO of live refresh tokens: each request takes one out (presenting it exactly once),
  -- each successful response puts the rotated one in.
  local queue, head, tail = {}, 1, 1
  function init(args)
    for _, token in ipairs(my_lines(env("BENCH_SEEDS_FILE"))) do
      queue[tail] = token
      tail = tail + 1
    end
    wrk.method = "POST"
    wrk.path = TOKEN_PATH
    wrk.headers["Authorization"] = "Basic " .. env("BENCH_APP_BASIC")
    wrk.headers["Content-Type"] = FORM
  end
  function request()
    if head == tail then
      exhausted = exhausted + 1
      wrk.thread:stop()
      return wrk.format("GET", "/healthz", {}, nil)
    end
    local token = queue[head]
    queue[head] = nil
    head = head + 1
    return wrk.format(nil, nil, nil, "grant_type=refresh_token&refresh_token=" .. token)
  end
  on_ok = function(status, headers, body)
    local token = string.match(body, '"refresh_token":"([^"]+)"')
    if not token then return false end
    queue[tail] = token
    tail = tail + 1
    return true
  end

elseif scenario == "portal" then
  -- The portal page of a signed-in person, as a browser fetches it.
  expect_body = 'id="greeting"'
  function init(args)
    wrk.method = "GET"
    wrk.path = "/"
    wrk.headers["Cookie"] = env("BENCH_COOKIE")
  end

else
  error("unknown BENCH_SCENARIO " .. scenario)
end

function response(status, headers, body)
  if status ~= expect_status then
    fail("status", status, body)
  elseif expect_body and not string.find(body, expect_body, 1, true) then
    fail("body", status, body)
  elseif on_ok and not on_ok(status, headers, body) then
    fail("body", status, body)
  else
    ok = ok + 1
  end
end

function done(summary, latency, requests)
  local sum = { ok = 0, bad_status = 0, bad_body = 0, exhausted = 0 }
  local firsts = {}
  for _, thread in ipairs(threads) do
    for key in pairs(sum) do sum[key] = sum[key] + (thread:get(key) or 0) end
    local first = thread:get("first_error")
    if first and first ~= "" then firsts[#firsts + 1] = first end
  end
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT scenario=%s requests=%d duration_s=%.3f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f " ..
    "ok=%d bad_status=%d bad_body=%d socket_errors=%d exhausted=%d\n",
    scenario, summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    sum.ok, sum.bad_status, sum.bad_body, e.connect + e.read + e.write + e.timeout, sum.exhausted))
  for _, first in ipairs(firsts) do io.write("FIRST_ERROR ", first, "\n") end
end
