-- sysbench script for scripts/shard-bench.sh: one scatter read per event,
-- `SELECT id, k FROM sbtest1 ORDER BY id LIMIT 10` (every shard asked,
-- answers merged on id), as a prepared statement.
function thread_init()
  drv = sysbench.sql.driver()
  con = drv:connect()
  stmt = con:prepare("SELECT id, k FROM sbtest1 ORDER BY id LIMIT 10")
end

function event()
  stmt:execute()
end

function thread_done()
  stmt:close()
  con:disconnect()
end
