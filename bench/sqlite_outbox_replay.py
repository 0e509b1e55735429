#!/usr/bin/env python3
"""What the outbox costs one embedded V1 coupon transaction, without the service.

Replays the transaction the coupon service runs on SQLite for a V1 issue
(read the campaign, count the user's coupons, insert the coupon, add to
`issued`, commit) on the same tables, indexes and pragmas, with and without
the outbox row, and every 250 transactions the relay's read and mark:

    python3 bench/sqlite_outbox_replay.py off|idx|partial|noidx [transactions]

`off`: no outbox; `idx`: the outbox before `outbox_published_index` (the
relay's index holds every row); `partial`: as migrated now (the index
holds published rows only; the relay finds unpublished rows by `seq`);
`noidx`: no relay index at all, relayed by `seq` (measured in
bench/outbox.md, not what the service does). Prints the time and the
bytes written (the WAL and its checkpoints) per transaction. Files go to
$TMPDIR (default /tmp).
"""
import os, random, sqlite3, sys, tempfile, time, uuid

mode = sys.argv[1]  # off | idx | partial | noidx
N = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
assert mode in ("off", "idx", "noidx", "partial"), "usage: off|idx|partial|noidx [transactions]"
p = os.path.join(tempfile.gettempdir(), f"outbox-replay-{mode}.db")
for s in ("", "-wal", "-shm"):
    try: os.remove(p + s)
    except FileNotFoundError: pass
c = sqlite3.connect(p, isolation_level=None)
for pr in ("journal_mode=WAL", "synchronous=NORMAL", "temp_store=MEMORY", "cache_size=-65536", "wal_autocheckpoint=16384"):
    c.execute("PRAGMA " + pr)
c.executescript("""
CREATE TABLE campaigns (id TEXT PRIMARY KEY, issued INTEGER NOT NULL, quota INTEGER NOT NULL);
INSERT INTO campaigns VALUES ('c', 0, 100000000);
CREATE TABLE coupons (coupon_id TEXT NOT NULL PRIMARY KEY, code TEXT NOT NULL, campaign_id TEXT NOT NULL, user_id TEXT NOT NULL,
  seq INTEGER NOT NULL, request_id TEXT NULL, status TEXT NOT NULL, issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
  CONSTRAINT a UNIQUE (code), CONSTRAINT b UNIQUE (campaign_id, user_id, seq), CONSTRAINT d UNIQUE (request_id));
CREATE INDEX ix_coupon_user ON coupons (user_id, coupon_id);
CREATE TABLE outbox (seq INTEGER PRIMARY KEY, subject TEXT NOT NULL, time INTEGER NOT NULL, n INTEGER NOT NULL DEFAULT 1,
  events BLOB NULL, event_id TEXT NULL, type TEXT NULL, data TEXT NULL, published_at INTEGER NULL);
""")
if mode == "idx":
    c.execute("CREATE INDEX ix_outbox_relay ON outbox (published_at, seq, n)")
if mode == "partial":
    c.execute("CREATE INDEX ix_outbox_published ON outbox (published_at, seq, n) WHERE published_at IS NOT NULL")
ev = b'{"id":"coupon.issued:' + b'x'*32 + b'","type":"dev.promo.coupon.issued","subject":"campaign/c","time":"2026-11-30T00:00:00.000Z","datacontenttype":"application/json","data":{"couponId":"' + b'y'*32 + b'","campaignId":"c","userId":"u-123456","code":"ABCDEFGHIJKL","expiresAt":"2026-12-30T00:00:00.000Z"}}'
t0 = time.perf_counter(); w0 = int(open(f"/proc/{os.getpid()}/io").read().split("wchar: ")[1].split()[0])
mark_t = 0.0
last = 0
for i in range(N):
    c.execute("BEGIN")
    c.execute("SELECT issued, quota FROM campaigns WHERE id='c'").fetchone()
    u = f"u-{i}-{random.randrange(10**7)}"
    c.execute("SELECT COUNT(*) FROM coupons WHERE campaign_id='c' AND user_id=?", (u,)).fetchone()
    if mode != "off":
        c.execute("INSERT INTO outbox (subject, time, n, events) VALUES (?, ?, 1, ?)", ("campaign/c", i, ev))
    c.execute("INSERT INTO coupons VALUES (?,?,?,?,?,?,?,?,?)", (uuid.uuid4().hex, uuid.uuid4().hex[:12], 'c', u, 1, None, 'ISSUED', i, i))
    c.execute("UPDATE campaigns SET issued = issued + 1 WHERE id='c' AND issued + 1 <= quota")
    c.execute("COMMIT")
    if mode != "off" and i % 250 == 249:
        m0 = time.perf_counter()
        if mode == "idx":
            seqs = [r[0] for r in c.execute("SELECT seq FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT 500")]
        else:
            seqs = [r[0] for r in c.execute("SELECT seq FROM outbox WHERE seq > ? ORDER BY seq LIMIT 500", (last,))]
        rows = c.execute(f"SELECT * FROM outbox WHERE seq IN ({','.join('?'*len(seqs))})", seqs).fetchall()
        c.execute("BEGIN")
        c.execute(f"UPDATE outbox SET published_at = ? WHERE published_at IS NULL AND seq IN ({','.join('?'*len(seqs))})", [i] + seqs)
        c.execute("COMMIT")
        last = seqs[-1]
        mark_t += time.perf_counter() - m0
dt = time.perf_counter() - t0
w1 = int(open(f"/proc/{os.getpid()}/io").read().split("wchar: ")[1].split()[0])
print(f"{mode}: {dt/N*1e6:.1f} us/txn (relay {mark_t/N*1e6:.1f}), {(w1-w0)/N:.0f} B written/txn")
