"""The propagation section: how long a change made through one posd
instance takes to reach another one sharing the platform database
(BENCHMARKS.md, "Several instances").

A second posd (B) is started beside the suite's (A), both with a one-hour
placement and context cache, so that only NOTIFY can bring a change. For
each kind of change, ROUNDS times, alternately one way and back:

- suspension: POST /admin/tenants/{id}/suspend (and /resume) through A,
  seen when B answers the merchant's read 403 (200 after /resume): the
  `posd_placement` channel;
- limit: POST /admin/tenants/{id}/plan with a `requestsPerMinute` override
  of 0 through A (then none), seen when B answers 429 (200): the
  `posd_context` channel;
- staff: a cashier deactivated through A (PATCH /staff/{id}, by the owner,
  then reactivated), seen when B answers the cashier's read 401 (200): the
  `posd_staff` channel.

The delay is from the moment A's answer arrives (the change is committed
by then) to the first answer of B that shows it; B is read in a tight loop
(one request at a time, each about a millisecond), so the figures carry up
to one request's time of resolution. Standard library only; talks only to
127.0.0.1; every loop is bounded in count and time.
"""

import time

import server
from common import log, stats

ROUNDS = {True: 40, False: 200}
# One wait for a change to show, at most.
LIMIT_S = 5.0


def percentile(values, p):
    v = sorted(values)
    if not v:
        return None
    k = min(len(v) - 1, max(0, round(p / 100 * (len(v) - 1))))
    return v[k]


def wait_seen(b_posd, token, want):
    """Reads through B until it answers `want`; seconds it took."""
    t0 = time.monotonic()
    while True:
        st, _ = b_posd.call("GET", "/products?limit=1", token, timeout=10)
        if st == want:
            return time.monotonic() - t0
        if time.monotonic() - t0 > LIMIT_S:
            raise RuntimeError(f"instance B never answered {want} (last {st})")


def kind(b, b_posd, token, name, change, undo, changed_status):
    delays = []
    for i in range(ROUNDS[b.quick]):
        forward = i % 2 == 0
        st, r = (change if forward else undo)()
        assert st == 200, (name, st, r)
        delays.append(wait_seen(b_posd, token, changed_status if forward else 200))
    ms = [d * 1000 for d in delays]
    out = {"n": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
           "max_ms": max(ms), "ms": stats(ms)}
    log(f"propagation {name}: p50 {out['p50_ms']:.1f} ms, p99 {out['p99_ms']:.1f} ms, "
        f"max {out['max_ms']:.1f} ms over {out['n']} changes")
    return out


def run(b):
    env = {**b.tier_env, "POSD_PLACEMENT_CACHE_TTL": "1h"}
    b.start_posd(env)
    b_posd = server.Posd(b.args.posd, b.data, b.out, {**b.base_env, **env}, "posd-b").start()
    try:
        m = b.create_merchant("propagation", "shared")
        st, _ = b.posd.call("POST", f"/admin/tenants/{m['id']}/plan", b.admin, {"plan": "enterprise"})
        assert st == 200, st
        a = b.posd
        path = f"/admin/tenants/{m['id']}"
        res = b.results.setdefault("propagation", {})
        res["suspension"] = kind(
            b, b_posd, m["token"], "suspension",
            lambda: a.call("POST", path + "/suspend", b.admin, {}),
            lambda: a.call("POST", path + "/resume", b.admin, {}),
            403)
        res["limit"] = kind(
            b, b_posd, m["token"], "limit",
            lambda: a.call("POST", path + "/plan", b.admin, {"limitOverrides": {"requestsPerMinute": 0}}),
            lambda: a.call("POST", path + "/plan", b.admin, {"limitOverrides": {"requestsPerMinute": None}}),
            429)
        email, password = "cashier@propagation.example", "cashier-password-1"
        st, staff = a.call("POST", "/staff", m["token"],
                           {"email": email, "password": password, "role": "cashier"})
        assert st == 201, (st, staff)
        cashier = a.login("propagation", email, password)
        assert b_posd.call("GET", "/products?limit=1", cashier)[0] == 200
        res["staff"] = kind(
            b, b_posd, cashier, "staff",
            lambda: a.call("PATCH", f"/staff/{staff['id']}", m["token"], {"active": False}),
            lambda: a.call("PATCH", f"/staff/{staff['id']}", m["token"], {"active": True}),
            401)
    finally:
        b_posd.stop()
