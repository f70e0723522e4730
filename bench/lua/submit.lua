-- POST /api/tasks with one small task. Usage: wrk ... -s submit.lua URL
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"title": "Resize images", "description": "Make thumbnails for album 42",' ..
  ' "metadata": {"album_id": 42, "sizes": [128, 512]}}'
