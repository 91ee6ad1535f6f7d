"""Checks the Redis debits without Lua: the balances must have gone down by
exactly the sum of the successful debits the idempotency fields record.

    python3 check_redis.py (--socket PATH | --port N) ACCOUNTS BALANCE

Reads every account hash (acct:<12 digits>, 0 .. ACCOUNTS-1) with pipelined
HGETALLs and prints one line; exits 1 when the sums differ. Speaks the
protocol over a plain socket with hiredis's parser (Debian: python3-hiredis),
so that a million accounts take seconds, not a minute.
"""

import argparse
import socket
import sys

import hiredis

BATCH = 5000


def hgetall_batch(first: int, last: int) -> bytes:
    parts = []
    for account in range(first, last):
        key = b"acct:%012d" % account
        parts.append(b"*2\r\n$7\r\nHGETALL\r\n$%d\r\n%s\r\n" % (len(key), key))
    return b"".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket")
    parser.add_argument("--port", type=int)
    parser.add_argument("accounts", type=int)
    parser.add_argument("balance", type=int)
    args = parser.parse_args()
    if args.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(args.socket)
    else:
        conn = socket.create_connection(("127.0.0.1", args.port))
    reader = hiredis.Reader()

    balances = debited = ok = rejected = missing = 0
    for first in range(0, args.accounts, BATCH):
        last = min(first + BATCH, args.accounts)
        conn.sendall(hgetall_batch(first, last))
        for _ in range(first, last):
            reply = reader.gets()
            while reply is False:
                data = conn.recv(1 << 20)
                if not data:
                    raise SystemExit("check: the server closed the connection")
                reader.feed(data)
                reply = reader.gets()
            if isinstance(reply, hiredis.ReplyError):
                raise SystemExit(f"check: {reply}")
            if not reply:
                missing += 1
                continue
            fields = iter(reply)
            for name, value in zip(fields, fields):
                if name == b"b":
                    balances += int(value)
                elif name.startswith(b"i:"):
                    amount, outcome = value.split(b":")
                    if outcome == b"ok":
                        ok += 1
                        debited += int(amount)
                    else:
                        rejected += 1

    decrease = args.accounts * args.balance - balances
    equal = decrease == debited and missing == 0
    print(
        f"  check: balances went down by {decrease}; idempotency fields record "
        f"{ok} successful debits totalling {debited} ({rejected} rejected"
        f"{f', {missing} accounts missing' if missing else ''}); "
        f"{'equal -> ok' if equal else 'NOT EQUAL -> FAILED'}"
    )
    print(f"  keys:  {ok + rejected} idempotency keys in all")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
