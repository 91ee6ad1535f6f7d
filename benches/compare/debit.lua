-- The debit in Redis, atomically (a script runs alone on the server).
-- The counterpart of debit() in schema.sql.
--
--   EVALSHA <sha> 1 acct:<account> <id> <amount>
--
-- Each account is one hash: field b = balance, h = held (cents), and one
-- field "i:<id>" per idempotency key it has seen, holding
-- "<amount>:<outcome>". Keeping the keys inside the account's hash makes
-- the key check and the debit touch one Redis key (cluster-safe too).
--   1. invalid amount                        -> invalid_amount, nothing recorded
--   2. key exists: same amount -> replay:<outcome>, other -> conflict
--   3. unknown account                       -> unknown_account, nothing recorded
--   4. debit only if b - h >= amount, then record the key with the outcome
local account = KEYS[1]
local id = ARGV[1]
local amount = tonumber(ARGV[2])
if amount == nil or amount <= 0 or amount ~= math.floor(amount) then
    return 'invalid_amount'
end
local field = 'i:' .. id
local previous = redis.call('HGET', account, field)
if previous then
    local previous_amount, previous_outcome = string.match(previous, '^(%d+):(%a+)$')
    if tonumber(previous_amount) == amount then
        return 'replay:' .. previous_outcome
    end
    return 'conflict'
end
local funds = redis.call('HMGET', account, 'b', 'h')
if not funds[1] then
    return 'unknown_account'
end
local outcome = 'rejected'
if tonumber(funds[1]) - tonumber(funds[2] or '0') >= amount then
    redis.call('HINCRBY', account, 'b', -amount)
    outcome = 'ok'
end
redis.call('HSET', account, field, amount .. ':' .. outcome)
return outcome
