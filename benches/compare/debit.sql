-- pgbench script: one debit per transaction through the server-side
-- function debit() of schema.sql (one round trip, like EVALSHA in Redis).
-- Run with: pgbench -n -M prepared -D accounts=N -f debit.sql ...
--
-- The same random choices as redis.sh makes with redis-benchmark's
-- __rand_int__ (uniform in 0 .. accounts-1): a random account, a random
-- id out of accounts^2 (so replays are rare but possible), and a random
-- amount in cents (0 is an invalid amount, rejected before the key).
\set acct random(0, :accounts - 1)
\set id random(0, :accounts * :accounts - 1)
\set amt random(0, :accounts - 1)
SELECT debit(:acct, :id, :amt);
