-- wrk script: POST a MESSAGE_RECEIVED webhook with a unique message id per request, so
-- every request is a new event (accepted), not a duplicate.
--   wrk -t2 -c64 -d15s --latency -s scripts/bench/webhook.lua http://127.0.0.1:8080/webhooks/wts/<token>

local counter = 0
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  -- Unique across runs and threads: the start time, the thread (set by setup), a counter.
  prefix = string.format("%d-%d-", os.time(), thread_id)
end

local template = [[{"eventType":"MESSAGE_RECEIVED","date":"2025-07-27T23:46:00.1260435Z","content":{"id":"%s%d","senderId":null,"createdAt":"2025-07-27T23:46:00.1040498Z","updatedAt":"2025-07-27T23:46:00.1040498Z","editedAt":null,"type":"TEXT","active":true,"sessionId":"bench-session-%d","templateId":null,"userId":null,"timestamp":"2025-07-27T23:45:56Z","text":"Pode me mandar o manual de instalação?","direction":"FROM_HUB","status":"DELIVERED","origin":"GATEWAY","readContactAt":null,"fileId":null,"refId":null,"waitingOptIn":false,"details":{"file":null,"location":null,"contact":null,"errors":null,"transcription":null}},"changeMetadata":null}]]

function request()
  counter = counter + 1
  local body = string.format(template, prefix, counter, counter % 1000)
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end
