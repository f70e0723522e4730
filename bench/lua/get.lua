-- GET the URL given (its query included), again and again. Usage: wrk ... -s get.lua URL
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")
