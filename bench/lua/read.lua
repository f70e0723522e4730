-- GET /api/tasks/{id}, the ids drawn at random from a file of one id a line.
-- Usage: wrk ... -s read.lua URL -- IDS_FILE
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

local ids = {}

function init(args)
  for line in io.lines(args[1]) do
    ids[#ids + 1] = line
  end
  math.randomseed(os.time() + os.clock() * 1000000)
end

function request()
  return wrk.format("GET", "/api/tasks/" .. ids[math.random(#ids)])
end
