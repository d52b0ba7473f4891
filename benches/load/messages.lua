-- wrk script: POST /v1/messages with a different customer per request batch and
-- questions from eval/bundled-queries.tsv (passed in by run.sh as QUESTIONS_FILE).
local questions = {}
local file = os.getenv("QUESTIONS_FILE")
for line in io.lines(file) do
  local q = line:match("^([^\t]+)\t")
  if q and q ~= "query" then
    table.insert(questions, q)
  end
end

local counter = 0
local thread_id = 0

function setup(thread)
  thread:set("thread_id", counter)
  counter = counter + 1
end

local n = 0
request = function()
  n = n + 1
  local q = questions[(n * 7 + thread_id * 13) % #questions + 1]
  local user = string.format("wrk-%d-%d", thread_id, math.floor(n / 4))
  local body = string.format('{"user":"%s","text":"%s","message_id":"%d-%d"}', user, q, thread_id, n)
  return wrk.format("POST", "/v1/messages", {["Content-Type"] = "application/json"}, body)
end
