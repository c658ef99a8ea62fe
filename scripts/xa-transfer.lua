-- sysbench script for scripts/xa-bench.sh: one transfer per event,
-- BEGIN; debit one account; credit another; COMMIT. Accounts are spread
-- over --shards contiguous id ranges (the bench's range rule); --cross
-- percent of transfers credit an account on another shard (a cross-shard
-- commit through a cluster), the rest one on the same shard.
sysbench.cmdline.options = {
  cross = {"Percent of transfers between two shards", 10},
  accounts = {"Accounts", 100000},
  shards = {"Shards (contiguous id ranges)", 4},
}

function thread_init()
  drv = sysbench.sql.driver()
  con = drv:connect()
end

function event()
  local per = math.floor(sysbench.opt.accounts / sysbench.opt.shards)
  local a = sysbench.rand.uniform(1, sysbench.opt.accounts)
  local sa = math.floor((a - 1) / per)
  local sb = sa
  if sysbench.rand.uniform(1, 100) <= sysbench.opt.cross then
    sb = (sa + sysbench.rand.uniform(1, sysbench.opt.shards - 1)) % sysbench.opt.shards
  end
  local b = sb * per + sysbench.rand.uniform(1, per)
  if b == a then
    b = sb * per + (b % per) + 1
  end
  con:query("BEGIN")
  con:query("UPDATE accounts SET balance = balance - 1 WHERE id = " .. a)
  con:query("UPDATE accounts SET balance = balance + 1 WHERE id = " .. b)
  con:query("COMMIT")
end

function thread_done()
  con:disconnect()
end
