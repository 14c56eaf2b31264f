"""The noisy section: one shared-tier merchant floods posd; do the other
shared-tier merchants keep their latency? (BENCHMARKS.md, "Noisy
neighbours").

Nine shared-tier merchants: one "flood" merchant and eight "quiet" ones.
posd runs with a global pool of 8 connections, in turn without a cap per
merchant (POSD_MERCHANT_POOL_SHARE=1, "before") and with the default cap
(0.5: at most 4 of the 8 connections for one merchant, "after"). For each
setting, RUNS times, side by side:

1. quiet only: wrk, 4 connections, GET /products/{id} spread over the
   quiet merchants' products;
2. the same quiet load while a second wrk, started with it and lasting as
   long, places orders (POST /orders, 3 lines, card) for the flood
   merchant over 48 connections: each order holds a connection through
   its commit, so the flood keeps every connection it may have busy.

Then posd's own view of the flood merchant (`noisy` in GET
/admin/tenants/{id}, `posd_merchant_noisy_share` in /metrics), read after
each flood phase: the check runs every 30 s, so a full flood phase lasts
longer than that. wrk counts answers 503 (`database_busy` once a capped
merchant has waited POSD_POOL_CONNECT_TIMEOUT) apart from other errors.
Standard library only; talks only to 127.0.0.1; every loop is bounded in
count and time.
"""

import concurrent.futures as cf
import time
import urllib.request

# sections imports this module; wrk() and order_targets() are looked up
# when the section runs, once both modules are loaded.
import sections
from common import PRODUCTS, log, stats

QUIET = 8
QUIET_PRODUCTS = 5
QUIET_CONNS = 4
FLOOD_CONNS = 48
POOL = 8
# (POSD_MERCHANT_POOL_SHARE, label): no cap first, then the default cap.
SETTINGS = (("1", "no cap"), ("0.5", "cap 0.5"))
# Seconds of each phase, (quiet only, quiet under flood): full, quick. A
# full flood phase outlasts the noisy check's 30 s period.
PHASE_S = {False: (10, 36), True: (3, 6)}


def noisy_view(b, flood):
    """posd's flag on the flood merchant: the tenant view's `noisy` and the
    merchant's posd_merchant_noisy_share line in /metrics."""
    st, t = b.posd.call("GET", f"/admin/tenants/{flood['id']}", b.admin)
    assert st == 200, (st, t)
    e = t.get("noisy")
    view = {"present": bool(e)}
    if e:
        view.update(share=e.get("share"), pool_busy=e.get("poolBusy"),
                    others_wait_ms=e.get("othersWaitMs"), since=e.get("since"),
                    recommendation=e.get("recommendation"),
                    top_routes=[r.get("route") for r in e.get("topRoutes") or []])
    try:
        with urllib.request.urlopen(b.posd.base + "/metrics", timeout=10) as r:
            lines = r.read().decode(errors="replace").splitlines()
        view["metric"] = next((ln for ln in lines if ln.startswith("posd_merchant_noisy_share")
                               and flood["id"] in ln), None)
    except OSError as ex:
        view["metric"] = f"unavailable: {ex}"
    return view


def phase(b, quiet_t, flood_t, dur, name):
    """The quiet load alone (flood_t None) or with the flood, both wrk
    processes started together for the same duration."""
    if flood_t is None:
        return sections.wrk(b, quiet_t, QUIET_CONNS, dur, name, status_counts=True), None
    with cf.ThreadPoolExecutor(max_workers=2) as ex:
        q = ex.submit(sections.wrk, b, quiet_t, QUIET_CONNS, dur, name, True)
        f = ex.submit(sections.wrk, b, flood_t, FLOOD_CONNS, dur, name + "-flood", True)
        return q.result(), f.result()


def setting(b, share, label, quiet_t, flood_t, flood):
    quiet_s, flood_s = PHASE_S[b.quick]
    b.start_posd({**b.tier_env, "POSD_POOL_SIZE": str(POOL),
                  "POSD_MERCHANT_POOL_SHARE": share}, name=f"posd-noisy-{share}")
    started = time.monotonic()
    if not b.quick:  # warm the pool and the quiet merchants' contexts
        sections.wrk(b, quiet_t, QUIET_CONNS, 1, "noisy-warm", status_counts=True)
        sections.wrk(b, flood_t, QUIET_CONNS, 1, "noisy-warm-flood", status_counts=True)
    runs, views = [], []
    for i in range(b.runs):
        alone, _ = phase(b, quiet_t, None, quiet_s, f"noisy-{share}-quiet")
        under, fl = phase(b, quiet_t, flood_t, flood_s, f"noisy-{share}-flood")
        view = noisy_view(b, flood)
        view["uptime_s"] = round(time.monotonic() - started, 1)
        views.append(view)
        runs.append({"alone": alone, "under": under, "flood": fl})
        log(f"noisy {label} run {i + 1}: quiet p50/p99 {alone['p50_us'] / 1000:.2f}/"
            f"{alone['p99_us'] / 1000:.2f} ms alone, {under['p50_us'] / 1000:.2f}/"
            f"{under['p99_us'] / 1000:.2f} ms under flood ({under['rps']:.0f} req/s, "
            f"errors {under['errors']}); flood {fl['rps']:.0f} req/s, 503s {fl['s503']}, "
            f"other errors {fl['errors'] - fl['s503']}; noisy flag "
            f"{'set, share %.2f' % view['share'] if view['present'] else 'absent'} "
            f"at {view['uptime_s']} s")
        for who, w in (("quiet alone", alone), ("quiet under flood", under)):
            if w["errors"]:
                log(f"noisy {label}: {w['errors']} errors for the quiet merchants ({who}): "
                    f"503 {w['s503']}, other 4xx/5xx {w['s4xx5xx']}, timeouts {w['timeout']}, "
                    f"connect/read/write {w['connect']}/{w['read']}/{w['write']}; see {b.posd.logpath}")

    def side(key, field):
        return stats([r[key][field] for r in runs])

    res = {
        "share": share, "label": label,
        "quiet_alone": {k: side("alone", k) for k in ("rps", "p50_us", "p99_us")},
        "quiet_flood": {k: side("under", k) for k in ("rps", "p50_us", "p99_us")},
        # Per run, side by side: under flood ÷ alone.
        "p99_factor": stats([r["under"]["p99_us"] / r["alone"]["p99_us"] for r in runs]),
        "p50_factor": stats([r["under"]["p50_us"] / r["alone"]["p50_us"] for r in runs]),
        "quiet_errors": sum(r["alone"]["errors"] + r["under"]["errors"] for r in runs),
        "quiet_requests": sum(r["alone"]["requests"] + r["under"]["requests"] for r in runs),
        "flood": {"rps": side("flood", "rps"), "p50_us": side("flood", "p50_us"),
                  "p99_us": side("flood", "p99_us"),
                  "requests": sum(r["flood"]["requests"] for r in runs),
                  "s503": sum(r["flood"]["s503"] for r in runs),
                  "other_errors": sum(r["flood"]["errors"] - r["flood"]["s503"] for r in runs)},
        "noisy": views[-1],
        "noisy_seen": [v["present"] for v in views],
        "runs": runs,
    }
    return res


def run(b):
    quiet_s, flood_s = PHASE_S[b.quick]
    res = b.results.setdefault("noisy", {})
    res.update(pool_size=POOL, quiet_merchants=QUIET, quiet_conns=QUIET_CONNS,
               flood_conns=FLOOD_CONNS, quiet_s=quiet_s, flood_s=flood_s,
               quiet_route="GET /api/v2/POS/products/{id}",
               flood_route="POST /api/v2/POS/orders (3 lines, card)", settings=[])
    flood = b.create_merchant("noisy-flood", "shared")
    b.add_products(flood, PRODUCTS)
    quiet = []
    for i in range(QUIET):
        m = b.create_merchant(f"noisy-quiet-{i}", "shared")
        b.add_products(m, QUIET_PRODUCTS)
        quiet.append(m)
    log(f"noisy: seeded 1 flood merchant ({PRODUCTS} products) and {QUIET} quiet ones "
        f"({QUIET_PRODUCTS} products each) on the shared tier")
    quiet_t = [(sections.get_path(m, p), m["token"]) for m in quiet for p in m["products"]]
    flood_t = sections.order_targets(flood)
    for share, label in SETTINGS:
        res["settings"].append(setting(b, share, label, quiet_t, flood_t, flood))
        x = res["settings"][-1]
        log(f"noisy {label}: quiet p99 {x['quiet_alone']['p99_us']['median'] / 1000:.2f} ms alone, "
            f"{x['quiet_flood']['p99_us']['median'] / 1000:.2f} ms under flood "
            f"(×{x['p99_factor']['median']:.1f}); flood {x['flood']['rps']['median']:.0f} req/s, "
            f"503s {x['flood']['s503']}; quiet errors {x['quiet_errors']}")
