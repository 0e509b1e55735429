#!/usr/bin/env python3
"""The observability proof behind `just obs-check`.

  obs_check.py load BASE_URL SECONDS FLUSH_CMD
      drives every service of a running `promo standalone`: coupons in V1/V2/V3
      (with duplicates and unknown campaigns), time-sale orders, points; halfway
      it runs FLUSH_CMD (drops the Redis counters) so a rebuild happens too.
  obs_check.py panels PROMETHEUS_URL DASHBOARD.json...
      runs every panel query through Prometheus' HTTP API; fails on an error
      or on an empty result. Panels fed only by the operator's metrics
      (promo_operator_*) are checked for errors only: no operator runs here.
"""

import concurrent.futures
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


def call_json(method, url, body=None, headers=None):
    """The status and the JSON body (None when there is none)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def call(method, url, body=None, headers=None):
    return call_json(method, url, body, headers)[0]


def held_then_confirmed(base, user):
    """Orders a pair of midnight-sneakers (held while the buyer pays) and
    confirms the hold; the statuses of both calls."""
    status, order = call_json("POST", f"{base}/time-sales/midnight-sneakers/orders",
                              {"userId": user, "quantity": 1})
    if status != 201 or not order or order.get("status") != "HELD":
        return [status]
    confirmed = call("POST", f"{base}/orders/{order['orderId']}/confirm",
                     {"paymentRef": f"pay-{user}"})
    return [status, confirmed]


def load(base, seconds, flush_cmd):
    run = uuid.uuid4().hex[:8]
    statuses = {}

    def one(i):
        user = f"obs-{run}-{i}"
        out = [
            call("POST", f"{base}/v1/campaigns/welcome-coupon/issue", {"userId": user}),
            call("POST", f"{base}/v2/campaigns/flash-vip/issue", {"userId": user}),
            call("POST", f"{base}/v3/campaigns/cyber-week-queued/issue", {"userId": user}),
            call("POST", f"{base}/v3/campaigns/cyber-week-queued/issue", {"userId": user}),  # 409
            call("POST", f"{base}/campaigns/no-such-campaign/issue", {"userId": user}),  # 404
            *held_then_confirmed(base, user),
            call("POST", f"{base}/time-sales/flash-airpods/orders", {"userId": user, "quantity": 2}),
            call("POST", f"{base}/v1/time-sales/flash-airpods/orders", {"userId": user + "-b", "quantity": 1}),
            call("POST", f"{base}/time-sales/weekend-coffee/orders", {"userId": user, "quantity": 1}),  # 422
            call("POST", f"{base}/users/{user}/points/earn", {"amount": 100, "reason": "obs"},
                 {"Idempotency-Key": f"e-{user}"}),
            call("POST", f"{base}/users/{user}/points/use", {"amount": 30, "reason": "obs"},
                 {"Idempotency-Key": f"u-{user}"}),
            call("GET", f"{base}/users/{user}/points"),
            call("GET", f"{base}/users/{user}/points"),
            call("GET", f"{base}/time-sales"),
        ]
        return out

    deadline = time.time() + seconds
    flushed = False
    i = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        while time.time() < deadline:
            batch = list(pool.map(one, range(i, i + 16)))
            i += 16
            for answers in batch:
                for s in answers:
                    statuses[s] = statuses.get(s, 0) + 1
            if not flushed and time.time() > deadline - seconds / 2:
                subprocess.run(flush_cmd, shell=True, check=True)
                flushed = True
                print("load: counters flushed (a rebuild follows)")
    print(f"load: {i} users, answers by status {dict(sorted(statuses.items()))}")
    if any(s >= 500 and s != 503 for s in statuses):
        print("FAIL the load saw server errors other than 503 during the rebuild")
        return 1
    return 0


def query(prom, expr):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)


def panels(prom, paths):
    failures = 0
    for path in paths:
        dash = json.load(open(path))
        for panel in dash["panels"]:
            for t in panel.get("targets", []):
                expr = t["expr"].replace("$promotion", ".*")
                answer = query(prom, expr)
                what = f"{path.split('/')[-1]} '{panel['title']}'"
                if answer.get("status") != "success":
                    print(f"FAIL {what}: {answer.get('error')}  [{expr}]")
                    failures += 1
                    continue
                series = len(answer["data"]["result"])
                names = set(re.findall(r"\b(promo_[a-z_]+)", expr))
                operator_only = names and all(n.startswith("promo_operator_") for n in names)
                if series == 0 and operator_only:
                    print(f"ok   {what}: valid query (operator metrics; no operator runs here)")
                elif series == 0:
                    print(f"FAIL {what}: no series  [{expr}]")
                    failures += 1
                else:
                    print(f"ok   {what}: {series} series")
    return failures


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    if argv[1] == "load":
        return load(argv[2], float(argv[3]), argv[4])
    if argv[1] == "panels":
        return 1 if panels(argv[2], argv[3:]) else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
