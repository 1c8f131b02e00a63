-- wrk: each request asks for one file of the static tree, uniformly at random, so that the whole tree
-- is the working set (the rig's prepare step writes AB_WEB_FILES files named 0.bin ... N-1.bin).
local n = tonumber(os.getenv("AB_WEB_FILES"))
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/f/" .. math.random(0, n - 1) .. ".bin")
end
