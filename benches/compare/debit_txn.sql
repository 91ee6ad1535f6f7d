-- pgbench script: the same debit as debit.sql, written the way a gateway
-- that keeps its logic in the application does it: an explicit
-- transaction, one statement per step, four round trips
-- (BEGIN, key insert, conditional update, COMMIT).
-- Run with: pgbench -n -M prepared -D accounts=N -f debit_txn.sql ...
\set acct random(0, :accounts - 1)
\set id random(0, :accounts * :accounts - 1)
\set amt random(0, :accounts - 1)
BEGIN;
-- The idempotency key first; fresh = 1 when this request owns the key.
-- (An invalid amount inserts nothing and so is answered like a replay
-- that finds no key: nothing changes.)
WITH ins AS (
    INSERT INTO idem (account, id, amount, ok)
    SELECT :acct, :id, :amt, true WHERE :amt > 0
    ON CONFLICT (account, id) DO NOTHING
    RETURNING 1
) SELECT count(*) AS fresh FROM ins \gset
\if :fresh
-- The conditional debit; if it did not happen, the key records the
-- rejection (a write only on that rare path).
WITH upd AS (
    UPDATE accounts SET balance = balance - :amt
    WHERE id = :acct AND balance - held >= :amt
    RETURNING 1
) UPDATE idem SET ok = false
  WHERE account = :acct AND id = :id AND NOT EXISTS (SELECT 1 FROM upd);
\else
-- Replay or conflict: read the stored outcome.
SELECT amount, ok FROM idem WHERE account = :acct AND id = :id;
\endif
COMMIT;
