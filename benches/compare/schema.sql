-- Accounts, idempotency keys and the debit, in PostgreSQL.
-- Run by postgres.sh as: psql -v accounts=N -v balance=B -f schema.sql
--
-- Money is in minor units (cents) as bigint, like debitcore's internal
-- representation. Accounts are numbered 0 .. accounts-1 in every system.

\set ON_ERROR_STOP on

-- fillfactor 90 leaves room on each page so a balance update can stay on
-- its page (a HOT update, no index write): the tuning a team running this
-- in production would do.
CREATE TABLE accounts (
    id      bigint NOT NULL,
    balance bigint NOT NULL,
    held    bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 90);

-- One row per idempotency key: (account, id) is the key, as in debitcore.
-- amount is kept to tell a replay (same amount) from a conflict; ok is the
-- outcome (true: debited; false: rejected for funds or unknown account).
CREATE TABLE idem (
    account bigint  NOT NULL,
    id      bigint  NOT NULL,
    amount  bigint  NOT NULL,
    ok      boolean NOT NULL,
    PRIMARY KEY (account, id)
);

-- What the correctness check compares against.
CREATE TABLE meta (initial_total numeric NOT NULL);

INSERT INTO accounts (id, balance)
SELECT g, :balance FROM generate_series(0, :accounts - 1) AS g;
ALTER TABLE accounts ADD PRIMARY KEY (id);
INSERT INTO meta SELECT sum(balance) FROM accounts;

-- The debit, server-side in one round trip and one transaction (the
-- statement's): the counterpart of debit.lua. Returns the outcome.
--   1. invalid amount           -> 'invalid_amount', nothing recorded
--   2. insert the key; if it exists, same amount -> 'replay:<outcome>',
--      other amount -> 'conflict'; nothing changes
--   3. conditional update: debit only if balance - held >= amount
--   4. not debited -> the key records the rejection
CREATE OR REPLACE FUNCTION debit(p_account bigint, p_id bigint, p_amount bigint)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    prev idem%ROWTYPE;
BEGIN
    IF p_amount <= 0 THEN
        RETURN 'invalid_amount';
    END IF;
    INSERT INTO idem (account, id, amount, ok)
    VALUES (p_account, p_id, p_amount, true)
    ON CONFLICT (account, id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT * INTO prev FROM idem WHERE account = p_account AND id = p_id;
        IF prev.amount = p_amount THEN
            RETURN CASE WHEN prev.ok THEN 'replay:ok' ELSE 'replay:rejected' END;
        END IF;
        RETURN 'conflict';
    END IF;
    UPDATE accounts SET balance = balance - p_amount
    WHERE id = p_account AND balance - held >= p_amount;
    IF NOT FOUND THEN
        UPDATE idem SET ok = false WHERE account = p_account AND id = p_id;
        RETURN 'rejected';
    END IF;
    RETURN 'ok';
END
$$;

VACUUM ANALYZE accounts;
VACUUM ANALYZE idem;
CHECKPOINT;
