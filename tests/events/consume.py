"""The events topic read by a consumer that knows only the CloudEvents Kafka
protocol binding: `confluent-kafka` for Kafka and the `cloudevents` package
for the binding, nothing from this repository.

    consume.py drive  <base-url> <admin-token>
        makes one change of every kind the services publish (see
        docs/events.md) and prints how many events the feed then lists.
    consume.py check  <base-url> <admin-token> <brokers> <topic>
        reads the whole topic from its start, converts every message with
        cloudevents.kafka.from_structured, validates each event against the
        catalogue, and compares the ids with GET /admin/events.

Exits non-zero, naming the event, on the first thing that is wrong.
"""

import datetime
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

# The catalogue (docs/events.md): each type and the `data` fields it carries.
ORDER = {"orderId", "sale", "userId", "quantity", "amount", "status", "strategy", "createdAt"}
POINTS = {"entryId", "userId", "kind", "amount", "balanceAfter", "reason", "createdAt"}
CATALOGUE = {
    "dev.promo.coupon.issued": ("coupon", {"couponId", "code", "campaign", "userId", "status", "issuedAt", "expiresAt"}),
    "dev.promo.coupon.redeemed": ("coupon", {"couponId", "campaign", "userId", "orderId", "orderAmount", "discountAmount", "payableAmount"}),
    "dev.promo.coupon.redemption_cancelled": ("coupon", {"couponId", "campaign", "userId", "orderId"}),
    "dev.promo.campaign.sold_out": ("coupon", {"campaign", "issued"}),
    "dev.promo.order.held": ("timesale", ORDER | {"holdExpiresAt"}),
    "dev.promo.order.confirmed": ("timesale", ORDER),
    "dev.promo.order.rejected": ("timesale", ORDER | {"reason"}),
    "dev.promo.order.cancelled": ("timesale", ORDER),
    "dev.promo.order.expired": ("timesale", ORDER),
    "dev.promo.points.earned": ("point", POINTS),
    "dev.promo.points.used": ("point", POINTS),
    "dev.promo.points.refunded": ("point", POINTS | {"refundOf"}),
    "dev.promo.points.expired": ("point", POINTS),
}
CONTENT_TYPE = "application/cloudevents+json"


def fail(message):
    print(f"[events-check] FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def call(method, url, token=None, body=None, key=None, expect=(200, 201)):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    if key:
        req.add_header("idempotency-key", key)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    if status not in expect:
        fail(f"{method} {url}: {status} {text[:300]!r}")
    return json.loads(text) if text else None


def window():
    now = datetime.datetime.now(datetime.timezone.utc)
    fmt = lambda t: t.isoformat().replace("+00:00", "Z")
    return fmt(now - datetime.timedelta(hours=1)), fmt(now + datetime.timedelta(days=1))


def drive(base, token):
    run = uuid.uuid4().hex[:8]
    starts, ends = window()
    campaign = f"ev-{run}"
    call("PUT", f"{base}/admin/campaigns/{campaign}", token, {
        "quota": 2, "perUserLimit": 1, "startsAt": starts, "endsAt": ends,
        "strategy": "DATABASE", "discount": {"kind": "FIXED", "value": 1000}})
    coupons = [call("POST", f"{base}/campaigns/{campaign}/issue", body={"userId": u}) for u in ("a", "b")]
    code = coupons[0]["code"]
    call("POST", f"{base}/coupons/{code}/redeem", body={"userId": "a", "orderId": "o1", "orderAmount": 5000})
    call("POST", f"{base}/coupons/{code}/cancel-redemption", body={"orderId": "o1"})

    sale = f"ev-{run}"
    call("PUT", f"{base}/admin/time-sales/{sale}", token, {
        "product": {"sku": "sku-1", "name": "Sneaker", "price": 10000}, "salePrice": 7000,
        "stock": 10, "perUserLimit": 1, "startsAt": starts, "endsAt": ends,
        "strategy": "REDIS_LOCK", "holdSeconds": 600})
    held = [call("POST", f"{base}/time-sales/{sale}/orders", body={"userId": u, "quantity": 1}) for u in ("a", "b")]
    call("POST", f"{base}/orders/{held[0]['orderId']}/confirm", body={"paymentRef": "pay-1"})
    call("POST", f"{base}/orders/{held[1]['orderId']}/cancel")
    plain = f"ev-{run}-queued"
    call("PUT", f"{base}/admin/time-sales/{plain}", token, {
        "product": {"sku": "sku-2", "name": "Cap", "price": 3000}, "salePrice": 2000,
        "stock": 1, "perUserLimit": 1, "startsAt": starts, "endsAt": ends, "strategy": "QUEUED"})
    for user in ("a", "b"):  # one confirmed, one rejected by the consumer
        call("POST", f"{base}/v3/time-sales/{plain}/orders", body={"userId": user, "quantity": 1}, expect=(202, 410))

    user = f"ev-{run}"
    soon = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)).isoformat()
    points = f"{base}/users/{user}/points"
    call("POST", f"{points}/earn", body={"amount": 100, "reason": "signup"}, key=f"{run}-1")
    call("POST", f"{points}/earn", body={"amount": 5, "reason": "promo", "expiresAt": soon}, key=f"{run}-2")
    used = call("POST", f"{points}/use", body={"amount": 30, "reason": "order"}, key=f"{run}-3")
    call("POST", f"{points}/refund", body={"entryId": used["entryId"]}, key=f"{run}-4")
    time.sleep(1.5)
    call("GET", points)  # the read expires the 5 points that ran out
    # 2 issued + sold out + redeemed + cancelled; held, confirmed, held,
    # cancelled, confirmed (V3), perhaps rejected (V3); earned ×2, used,
    # refunded, expired.
    want = 5 + 5 + 5
    feed = wait_for_feed(base, token, want)
    print(f"[events-check] drove every kind of change; the feed lists {len(feed)} events")


def feed_events(base, token):
    events, cursor = [], None
    while True:
        query = "limit=500" + (f"&after={cursor}" if cursor else "")
        page = call("GET", f"{base}/admin/events?{query}", token)
        if not page["items"]:
            return events
        events.extend(page["items"])
        cursor = page["nextCursor"]


def wait_for_feed(base, token, want, seconds=60):
    deadline = time.time() + seconds
    while True:
        events = feed_events(base, token)
        if len(events) >= want:
            return events
        if time.time() > deadline:
            fail(f"the feed lists {len(events)} events, {want} wanted")
        time.sleep(0.2)


def validate(event, key):
    """One CloudEvent as the binding gave it, against the catalogue."""
    attrs = event.get_attributes()
    where = f"event {attrs.get('id')!r}"
    if attrs.get("specversion") != "1.0":
        fail(f"{where}: specversion {attrs.get('specversion')!r}")
    for name in ("id", "source", "type", "subject", "time"):
        if not isinstance(attrs.get(name), str) or not attrs[name]:
            fail(f"{where}: no {name}")
    if attrs["type"] not in CATALOGUE:
        fail(f"{where}: type {attrs['type']!r} is not in the catalogue")
    service, fields = CATALOGUE[attrs["type"]]
    if attrs["source"] != f"/promo/{service}":
        fail(f"{where}: source {attrs['source']!r}, /promo/{service} expected")
    if key != attrs["subject"].encode():
        fail(f"{where}: message key {key!r} is not the subject {attrs['subject']!r}")
    try:
        datetime.datetime.fromisoformat(attrs["time"].replace("Z", "+00:00"))
    except ValueError:
        fail(f"{where}: time {attrs['time']!r} is not RFC 3339")
    data = event.get_data()
    if not isinstance(data, dict):
        fail(f"{where}: data is not a JSON object: {data!r}")
    missing = {f for f in fields if f not in data} - {"reason", "refundOf", "holdExpiresAt"}
    if missing:
        fail(f"{where}: data lacks {sorted(missing)}: {data}")
    if not attrs["id"].startswith(attrs["type"].removeprefix("dev.promo.") + ":"):
        fail(f"{where}: the id does not start with its type")


def check(base, token, brokers, topic):
    from cloudevents.kafka import KafkaMessage, from_structured
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    feed = {e["id"]: e for e in feed_events(base, token)}
    if not feed:
        fail("the feed is empty; run `drive` first")
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"events-check-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
    })
    meta = consumer.list_topics(topic, timeout=30).topics[topic]
    if meta.error is not None:
        fail(f"topic {topic}: {meta.error}")
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    seen, messages, deadline = {}, 0, time.time() + 60
    while set(feed) - set(seen) and time.time() < deadline:
        m = consumer.poll(1.0)
        if m is None:
            continue
        if m.error():
            fail(f"kafka: {m.error()}")
        messages += 1
        headers = {k: v for k, v in (m.headers() or [])}
        content_type = headers.get("content-type", b"").decode()
        if not content_type.startswith(CONTENT_TYPE):
            fail(f"message at {m.partition()}/{m.offset()}: content-type {content_type!r}")
        event = from_structured(KafkaMessage(headers=headers, key=m.key(), value=m.value()))
        validate(event, m.key())
        eid = event["id"]
        if eid in seen and seen[eid] != m.value():
            fail(f"event {eid!r} was published twice with different contents")
        seen[eid] = m.value()
    consumer.close()
    missing = set(feed) - set(seen)
    if missing:
        fail(f"{len(missing)} events of the feed never reached the topic, e.g. {sorted(missing)[:3]}")
    extra = set(seen) - set(feed)
    if extra:
        fail(f"{len(extra)} events on the topic are not in the feed, e.g. {sorted(extra)[:3]}")
    for eid, value in seen.items():
        if json.loads(value) != feed[eid]:
            fail(f"event {eid!r} differs between the topic and the feed")
    kinds = sorted({json.loads(v)["type"].removeprefix("dev.promo.") for v in seen.values()})
    print(f"[events-check] {messages} messages, {len(seen)} distinct events, all valid CloudEvents "
          f"(structured mode, {CONTENT_TYPE}); the same ids as the feed; types: {', '.join(kinds)}")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "drive":
        drive(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 6 and sys.argv[1] == "check":
        check(*sys.argv[2:6])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
