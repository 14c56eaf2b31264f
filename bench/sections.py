"""The benchmark sections, driven by posdbench.py."""

import concurrent.futures as cf
import glob
import json
import os
import re
import statistics
import subprocess
import threading
import time
import urllib.request
import uuid

import moves
import noisy
import propagation
import report
from common import OWNER_PASSWORD, PRICE, TIERS, log, stats

HERE = os.path.dirname(os.path.abspath(__file__))
WRK = os.path.join(HERE, "wrk", "targets.lua")


# ------------------------------------------------------------------ drivers

def wrk(b, targets, conns, dur, name, status_counts=False):
    """One wrk run over a targets file; returns the parsed summary. With
    status_counts, the summary also counts answers 503 (`s503`) apart from
    the other answers of 400 and above (`s4xx5xx`)."""
    path = os.path.join(b.out, f"targets-{name}.txt")
    with open(path, "w") as f:
        for t in targets:
            f.write("\t".join(t) + "\n")
    b.deadline.check(name)
    r = subprocess.run(
        ["wrk", "-t", "1", "-c", str(conns), "-d", f"{dur}s", "--timeout", "10s",
         "-s", WRK, b.posd.base, "--", path],
        capture_output=True, text=True, timeout=dur + 60,
        env={**os.environ, "WRK_STATUS_COUNTS": "1"} if status_counts else None,
    )
    for line in r.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            s = json.loads(line[len("BENCHJSON "):])
            s["rps"] = s["requests"] / (s["duration_us"] / 1e6)
            s["errors"] = s["connect"] + s["read"] + s["write"] + s["timeout"] + s["status"]
            return s
    raise RuntimeError(f"wrk gave no summary: {r.stdout[-500:]} {r.stderr[-500:]}")


def pgbench(b, db, scripts, defines, conns, dur, mode="prepared"):
    """One pgbench run: prepared statements by default; `extended` sends
    every statement unnamed (parsed and planned each time)."""
    b.deadline.check("pgbench")
    # One pgbench thread per CPU: with one thread, pgbench itself is the
    # bottleneck on a small machine (2 CPUs: 15-45% fewer TPS).
    threads = max(1, min(os.cpu_count() or 1, conns))
    while conns % threads:
        threads -= 1
    cmd = ["pgbench", "-n", "-M", mode, "-c", str(conns), "-j", str(threads), "-T", str(dur),
           "-U", "posd_app", "-d", db]
    for k, v in defines.items():
        cmd += ["-D", f"{k}={v}"]
    for s in scripts:
        cmd += ["-f", s]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=dur + 60,
                       env=b.data.env("posd_app"))
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", r.stdout)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"pgbench failed: {r.stdout[-800:]} {r.stderr[-800:]}")
    lat = re.search(r"latency average = ([0-9.]+) ms", r.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    return {"tps": float(m.group(1)), "latency_ms": float(lat.group(1)) if lat else None,
            "failed": int(failed.group(1)) if failed else 0}


class Sampler:
    """Samples server connections from pg_stat_activity every 0.2 s."""

    SQL = ("SELECT count(*) FILTER (WHERE backend_type = 'client backend'), "
           "count(*) FILTER (WHERE datname LIKE 'posd\\_m\\_%') "
           "FROM pg_stat_activity WHERE pid <> pg_backend_pid()")

    def __init__(self, b, seconds):
        self.b, self.seconds = b, seconds
        self.peak_total = self.peak_tenant = 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        end = time.monotonic() + self.seconds
        while time.monotonic() < end and not self.stop.is_set():
            try:
                total, tenant = self.b.data.rows(self.SQL)[0]
                self.peak_total = max(self.peak_total, int(total))
                self.peak_tenant = max(self.peak_tenant, int(tenant))
            except Exception:  # noqa: BLE001 - a missed sample is not fatal
                pass
            self.stop.wait(0.2)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.t.join(timeout=self.seconds + 10)


def get_path(m, pid=None):
    return f"/api/v2/POS/products/{pid or m['products'][0]}"


def order_targets(m):
    """Ten disjoint product triples; one target line per triple."""
    out = []
    for t in range(10):
        p = m["products"][3 * t:3 * t + 3]
        body = {"lines": [{"productId": x, "quantity": 1} for x in p],
                "payments": [{"method": "card", "amountMinor": 3 * PRICE, "reference": "bench"}]}
        out.append(("/api/v2/POS/orders", m["token"], json.dumps(body, separators=(",", ":"))))
    return out


def order_scripts(b, m):
    """One script per product triple, calling the functions in merchant m's
    schema (a name, so written into the text: pgbench -M prepared sends
    every variable as a parameter)."""
    with open(os.path.join(HERE, "pgbench", "order.sql")) as f:
        tpl = f.read()
    files = []
    for t in range(10):
        s = (tpl.replace("@P1@", f"p{3 * t}").replace("@P2@", f"p{3 * t + 1}")
             .replace("@P3@", f"p{3 * t + 2}").replace("@T@", str(t))
             .replace("@SP@", '"' + m["schema"] + '"'))
        path = os.path.join(b.out, f"pgbench-order-{m['schema']}-{t}.sql")
        with open(path, "w") as f:
            f.write(s)
        files.append(path)
    return files


def bench_defines(b, m, order=False):
    d = {"mid": m["id"], "sp": f'"{m["schema"]}"', "pid": m["products"][0], "one": "1"}
    if order:
        st, sample = b.posd.call("POST", "/orders", m["token"], json.loads(order_targets(m)[0][2]),
                                 headers={"Idempotency-Key": str(uuid.uuid4())})
        assert st == 201, (st, sample)
        staff = b.data.rows(
            f"SELECT id FROM staff_users WHERE merchant_id = '{m['id']}' LIMIT 1", db="posd")[0][0]
        three = lambda v: "{" + ",".join([v] * 3) + "}"  # noqa: E731
        d.update(hash="0" * 64, retention="24 hours", staff=staff,
                 currency="EUR", total=str(3 * PRICE), deltas=three("-1"), linenos="{1,2,3}",
                 ones=three("1"), trues=three("t"),
                 prices=three(str(PRICE)), zeros=three("0"),
                 body=json.dumps(sample, separators=(", ", ": ")))
        for i, p in enumerate(m["products"]):
            d[f"p{i}"] = p
        for t in range(10):
            d[f"pids{t}"] = "{" + ",".join(m["products"][3 * t:3 * t + 3]) + "}"
            # The catalog's sku and name of each product (bench.add_products).
            d[f"skus{t}"] = "{" + ",".join(f"SKU-{i:04d}" for i in range(3 * t, 3 * t + 3)) + "}"
            d[f"names{t}"] = "{" + ",".join(f'"Product {i}"' for i in range(3 * t, 3 * t + 3)) + "}"
    return d


# ----------------------------------------------------------------- sections

def capture(b):
    """What posd sends per request, against what the pgbench scripts send
    (pg_stat_statements, app role, one tier at a time)."""
    sql = ("SELECT calls, regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements "
           "WHERE userid = 'posd_app'::regrole AND query NOT LIKE '%pg_stat_statements%' "
           "ORDER BY calls DESC, query")
    n = 20
    report = []
    m = b.bm["shared"]
    for kind in ("read", "order"):
        seen = {}
        defines = bench_defines(b, m, kind == "order")
        for who in ("posd", "pgbench"):
            b.data.psql("SELECT pg_stat_statements_reset()")
            if who == "posd":
                for i in range(n):
                    if kind == "read":
                        st, _ = b.posd.call("GET", f"/products/{m['products'][0]}", m["token"])
                        assert st == 200
                    else:
                        path, tok, body = order_targets(m)[i % 10]
                        st, r = b.posd.call("POST", "/orders", tok, json.loads(body),
                                            headers={"Idempotency-Key": str(uuid.uuid4())})
                        assert st == 201, (st, r)
            else:
                scripts = [os.path.join(HERE, "pgbench", "read.sql")] if kind == "read" else order_scripts(b, m)
                cmd = ["pgbench", "-n", "-M", "prepared", "-c", "1", "-t", str(n), "-U", "posd_app", "-d", "posd"]
                for k, v in defines.items():
                    cmd += ["-D", f"{k}={v}"]
                for s in scripts:
                    cmd += ["-f", s]
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                                   env=b.data.env("posd_app"))
                if r.returncode != 0:
                    raise RuntimeError(f"pgbench {kind}: {r.stderr[-1500:]}")
            rows = b.data.rows(sql)
            # Requests made by the setup above (placement lookups) are not per request.
            rows = [(int(c), q) for c, q in rows if int(c) >= n]
            seen[who] = rows
            report.append(f"## {kind}: {who}, {n} requests\n" +
                          "\n".join(f"{c / n:5.2f}  {q[:220]}" for c, q in rows))
        per = {w: sum(c for c, _ in seen[w]) / n for w in seen}
        b.results.setdefault("statements_per_request", {})[kind] = per
        log(f"capture {kind}: statements per request posd {per['posd']:.2f}, pgbench {per['pgbench']:.2f}")
    with open(os.path.join(b.out, "sql-capture.txt"), "w") as f:
        f.write("\n\n".join(report) + "\n")


REFUND_ORDERS = 1000
OFFLINE_BILLS = 5


def refund_setup(b, m):
    """Orders to refund (REFUND_ORDERS, of 3 x PRICE each); a refund takes
    one minor unit, so none runs out during a run."""
    ids = []
    for i in range(REFUND_ORDERS):
        _, tok, body = order_targets(m)[i % 10]
        st, r = b.posd.call("POST", "/orders", tok, json.loads(body),
                            headers={"Idempotency-Key": str(uuid.uuid4())})
        assert st == 201, (st, r)
        ids.append(r["id"])
    targets = [(f"/api/v2/POS/orders/{o}/refunds", m["token"], '{"amountMinor":1}') for o in ids]
    defines = bench_defines(b, m, order=True)
    defines["norders"] = str(REFUND_ORDERS)
    script = os.path.join(b.out, f"pgbench-refund-{m['schema']}.sql")
    with open(os.path.join(HERE, "pgbench", "refund.sql")) as f:
        # The ids in the text: prepared once, not sent at every call.
        text = (f.read().replace("@SP@", '"' + m["schema"] + '"')
                .replace("@ORDERS@", "'{" + ",".join(ids) + "}'"))
    with open(script, "w") as f:
        f.write(text)
    return targets, [script], defines


def offline_setup(b, m):
    """A batch of OFFLINE_BILLS bills of one product triple each, sold a
    minute ago; wrk gives every bill a fresh client id."""
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    bills = []
    for i in range(OFFLINE_BILLS):
        p = m["products"][3 * i:3 * i + 3]
        bills.append({"clientId": "@UUID@", "createdAt": created,
                      "lines": [{"productId": x, "quantity": 1} for x in p],
                      "payments": [{"method": "card", "amountMinor": 3 * PRICE}]})
    body = json.dumps({"bills": bills}, separators=(",", ":"))
    targets = [("/api/v2/POS/offline-bills", m["token"], body)]
    defines = bench_defines(b, m, order=True)
    with open(os.path.join(HERE, "pgbench", "offline.sql")) as f:
        tpl = f.read()
    head, bill = tpl.split("-- @BILL@\n", 1)
    bill, tail = bill.split("-- @END@\n", 1)
    text = head + "".join(bill.replace("@T@", str(i)).replace("@I@", str(i))
                          for i in range(OFFLINE_BILLS)) + tail
    script = os.path.join(b.out, f"pgbench-offline-{m['schema']}.sql")
    with open(script, "w") as f:
        f.write(text.replace("@SP@", '"' + m["schema"] + '"'))
    return targets, [script], defines


def ratio_section(b, kind):
    """posd req/s against pgbench TPS for the same SQL, per tier, interleaved."""
    res = {}
    for tier in TIERS:
        m = b.bm[tier]
        if kind == "reads":
            targets = [(get_path(m), m["token"])]
            scripts = [os.path.join(HERE, "pgbench", "read.sql")]
            defines = bench_defines(b, m)
        elif kind == "refunds":
            targets, scripts, defines = refund_setup(b, m)
        elif kind == "offline":
            targets, scripts, defines = offline_setup(b, m)
        else:
            targets = order_targets(m)
            scripts = order_scripts(b, m)
            defines = bench_defines(b, m, order=True)
        # Warm up both sides (pools, caches, plans).
        if not b.quick:  # --quick saves the warm-up runs
            wrk(b, targets, b.conc, 1, f"{kind}-{tier}-warm")
            pgbench(b, m["db"], scripts, defines, b.conc, 1)
        posd_runs, pgb_runs, ratios, p50, p99, errors = [], [], [], [], [], 0
        ext_runs = []
        for i in range(b.runs):
            w = wrk(b, targets, b.conc, b.dur, f"{kind}-{tier}")
            p = pgbench(b, m["db"], scripts, defines, b.conc, b.dur)
            if kind == "orders" and not b.quick and i == 0:
                # The same scripts with no statement prepared, once per tier,
                # for scale: what preparing is worth on this path.
                ext_runs.append(pgbench(b, m["db"], scripts, defines, b.conc, b.dur,
                                        "extended")["tps"])
            log(f"{kind} {tier} run {i + 1}: posd {w['rps']:.0f} req/s "
                f"(p50 {w['p50_us'] / 1000:.1f} ms), pgbench {p['tps']:.0f} tps")
            posd_runs.append(w["rps"])
            pgb_runs.append(p["tps"])
            ratios.append(w["rps"] / p["tps"])
            p50.append(w["p50_us"])
            p99.append(w["p99_us"])
            errors += w["errors"] + p["failed"]
        res[tier] = {"posd_rps": stats(posd_runs), "pgbench_tps": stats(pgb_runs),
                     "ratio": stats(ratios), "p50_us": stats(p50), "p99_us": stats(p99),
                     "errors": errors}
        if ext_runs:
            res[tier]["pgbench_extended_tps"] = stats(ext_runs)
        log(f"{kind} {tier}: posd {statistics.median(posd_runs):.0f} req/s, "
            f"pgbench {statistics.median(pgb_runs):.0f} tps, ratio {statistics.median(ratios):.2f}")
    b.results[kind] = res


def routing(b):
    """The same read on a shared-tier merchant and on the control route."""
    m = b.bm["shared"]
    posd_t = [(get_path(m), m["token"])]
    ctrl_t = [(f"/api/v2/POS/bench/control/products/{m['products'][0]}?merchant={m['id']}", "")]
    st, _ = b.posd.call("GET", f"/bench/control/products/{m['products'][0]}?merchant={m['id']}")
    if st != 200:
        raise RuntimeError(f"control route answered {st}: is posd built with --features bench-control?")
    res = {}
    for conc in (1, b.conc):
        if not b.quick:
            wrk(b, posd_t, conc, 1, "routing-warm")
            wrk(b, ctrl_t, conc, 1, "routing-warm")
        a, c, over_pct, over_us, lat_a, lat_c = [], [], [], [], [], []
        for i in range(b.runs):
            wa = wrk(b, posd_t, conc, b.dur, "routing-posd")
            wc = wrk(b, ctrl_t, conc, b.dur, "routing-control")
            a.append(wa["rps"])
            c.append(wc["rps"])
            lat_a.append(wa["mean_us"])
            lat_c.append(wc["mean_us"])
            over_pct.append(100.0 * (wc["rps"] / wa["rps"] - 1.0))
            # Extra time per request (1/throughput): at one connection the
            # latency gap, with more the extra capacity each request takes.
            over_us.append(1e6 / wa["rps"] - 1e6 / wc["rps"])
        res[str(conc)] = {"posd_rps": stats(a), "control_rps": stats(c),
                          "posd_mean_us": stats(lat_a), "control_mean_us": stats(lat_c),
                          "overhead_pct": stats(over_pct), "overhead_us": stats(over_us)}
        log(f"routing c={conc}: posd {statistics.median(a):.0f} req/s, control "
            f"{statistics.median(c):.0f} req/s, overhead {statistics.median(over_pct):.1f}% "
            f"{statistics.median(over_us):.0f} us")
    b.results["routing"] = res


# ------------------------------------------------------------------ growth

def bulk_merchants(b, tier, start, count):
    """Control-plane rows for `count` merchants on the shared tier (SQL, one
    statement); their owners get the benchmark owners' password hash
    (OWNER_PASSWORD), which spares one Argon2 run per tenant."""
    pw_hash = b.data.rows(
        f"SELECT password_hash FROM staff_users WHERE merchant_id = '{b.bm['shared']['id']}'",
        db="posd")[0][0]
    ms = []
    values_m, values_s = [], []
    for i in range(start, start + count):
        mid, sid = str(uuid.uuid4()), str(uuid.uuid4())
        slug = f"t-{tier}-{i:05d}"
        ms.append({"id": mid, "staff": sid, "slug": slug, "tier": tier,
                   "email": f"owner@{slug}.example"})
        values_m.append(f"('{mid}', '{slug}', '{slug}', 'Europe/Paris', 'EUR', 'starter')")
        values_s.append(f"('{sid}', '{mid}', '{ms[-1]['email']}', '{pw_hash}', 'owner')")
    if ms:
        b.data.psql(
            "BEGIN;\nINSERT INTO merchants (id, slug, name, timezone, currency, plan) VALUES\n"
            + ",\n".join(values_m) + ";\n"
            + "INSERT INTO staff_users (id, merchant_id, email, password_hash, role) VALUES\n"
            + ",\n".join(values_s) + ";\nCOMMIT;\n", db="posd")
    return ms


def parallel(fn, items, workers, deadline, what):
    done = []
    with cf.ThreadPoolExecutor(max_workers=workers) as ex:
        futs = {}
        it = iter(items)
        for x in it:
            futs[ex.submit(fn, x)] = x
            if len(futs) >= workers * 4:
                break
        while futs:
            d, _ = cf.wait(list(futs), timeout=max(1, deadline.left()),
                           return_when=cf.FIRST_COMPLETED)
            if not d:
                raise TimeoutError(f"time budget exhausted during {what}")
            for f in d:
                futs.pop(f)
                f.result()
                done.append(f)
                if deadline.left() > 0:
                    x = next(it, None)
                    if x is not None:
                        futs[ex.submit(fn, x)] = x
    if len(done) < len(items):
        raise TimeoutError(f"time budget exhausted during {what}")
    return len(done)


def grow(b, tier, n):
    """Brings the tier to n tenants, each with one product."""
    have = b.fleet_tenants.setdefault(tier, [])
    need = n - len(have)
    if need <= 0:
        return
    t0 = time.monotonic()
    ms = bulk_merchants(b, tier, len(have), need)
    t1 = time.monotonic()
    if tier != "shared":
        parallel(lambda m: b.provision(m["id"], tier), ms, 4, b.deadline, f"provisioning {tier}")
    t2 = time.monotonic()

    # Each owner logs in (POST /auth/login) for its staff token, four at a
    # time. Not part of the creation time: each login is one Argon2 run.
    def login(m):
        m["token"] = b.posd.login(m["slug"], m["email"], OWNER_PASSWORD)
    parallel(login, ms, 4, b.deadline, f"logins {tier}")
    t2b = time.monotonic()

    refused, failed = [], []

    def product(m):
        # A 503 (no tenant connection to be had in time while the budget is
        # held by other pools) is counted and retried a bounded number of times.
        for attempt in range(10):
            st, p = b.posd.call("POST", "/products", m["token"], {
                "sku": "SKU-1", "name": "Product", "priceMinor": PRICE})
            if st == 201:
                m["products"] = [p["id"]]
                return
            if st != 503:
                break
            refused.append(1)
            time.sleep(0.2)
        failed.append(m["slug"])
        log(f"creating a product for {m['slug']} failed: {st} {p}")
    parallel(product, ms, 4, b.deadline, f"products {tier}")
    t3 = time.monotonic()
    # A tenant left without a product (posd kept refusing) is not measured.
    have.extend(m for m in ms if m.get("products"))
    c = b.results.setdefault("creation", {}).setdefault(tier, [])
    c.append({"from": len(have) - need, "to": len(have), "rows_s": round(t1 - t0, 2),
              "provision_s": round(t2 - t1, 2), "products_s": round(t3 - t2b, 2),
              "product_503s": len(refused), "without_product": len(failed)})
    log(f"{tier}: {need} tenants created in {t3 - t2b + t2 - t0:.1f}s "
        f"(provisioning {t2 - t1:.1f}s, first product {t3 - t2b:.1f}s; "
        f"logins {t2b - t2:.1f}s apart)")


def pools_summary(b):
    with urllib.request.urlopen(b.posd.base + "/readyz", timeout=10) as r:
        return json.load(r).get("tenantPools", {})


def first_requests(b, ms):
    """Time to first byte of each tenant's first request (cold placement and,
    for dedicated tenants, cold pool), one at a time."""
    ttfb = []
    for m in ms:
        req = urllib.request.Request(b.posd.base + get_path(m),
                                     headers={"Authorization": "Bearer " + m["token"]})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=30) as r:
            ttfb.append((time.perf_counter() - t0) * 1e6)
            r.read()
            if r.status != 200:
                raise RuntimeError(f"first request answered {r.status}")
    return ttfb


def growth(b):
    """Latency and RSS for 10, 100, 1,000 tenants per tier; the fleet
    figures are the dedicated tier at the largest step."""
    b.fleet_tenants = {}
    budget = 70
    fleet_env = {"POSD_POOL_SIZE": "10", "POSD_TENANT_POOL_SIZE": "2",
                 "POSD_CONNECTION_BUDGET": str(budget),
                 "POSD_MAX_TENANT_POOLS": str(max(b.steps))}
    res = b.results.setdefault("growth", [])
    for n in b.steps:
        for tier in TIERS:
            grow(b, tier, n)
        b.start_posd(fleet_env, name=f"posd-fleet-{n}")
        rss_boot = b.posd.rss_kib()
        for tier in TIERS:
            ms = b.fleet_tenants[tier][:n]
            rss0 = b.posd.rss_kib()
            # The first merchants' pools fit in the budget: none is evicted
            # yet, so RSS growth over them is the cost of a cached pool alone,
            # without what the allocator keeps from evicted ones.
            k = min(len(ms), budget // 2) if tier == "dedicated" else 0
            ttfb = first_requests(b, ms[:k])
            rss_k, pools_k = b.posd.rss_kib(), pools_summary(b)
            ttfb += first_requests(b, ms[k:])
            rss1 = b.posd.rss_kib()
            pools1 = pools_summary(b)
            runs = []
            # 3 s runs at most here, so that the whole suite stays within 15 min.
            dur = min(b.dur, 3)
            with Sampler(b, (dur + 2) * b.runs + 5) as smp:
                for i in range(b.runs):
                    runs.append(wrk(b, [(get_path(m), m["token"]) for m in ms], b.conc, dur,
                                    f"growth-{tier}-{n}"))
            rss2 = b.posd.rss_kib()
            pools2 = pools_summary(b)
            row = {
                "tier": tier, "tenants": n,
                "rps": stats([r["rps"] for r in runs]),
                "p50_us": stats([r["p50_us"] for r in runs]),
                "p99_us": stats([r["p99_us"] for r in runs]),
                "errors": sum(r["errors"] for r in runs),
                "requests": sum(r["requests"] for r in runs),
                "first_request_us": stats(ttfb),
                "first_request_p99_us": sorted(ttfb)[int(0.99 * (len(ttfb) - 1))],
                "rss_boot_kib": rss_boot, "rss_before_kib": rss0,
                "rss_after_first_kib": rss1, "rss_after_load_kib": rss2,
                "pools_after_first": pools1, "pools_after_load": pools2,
                "peak_server_connections": smp.peak_total,
                "peak_tenant_db_connections": smp.peak_tenant,
                "connection_budget": budget,
            }
            if tier == "dedicated" and pools1.get("livePools"):
                row["rss_per_live_pool_kib"] = (rss1 - rss0) / pools1["livePools"]
                if k and pools_k.get("livePools") == k and not pools_k.get("evictions"):
                    row["rss_per_cached_pool_kib"] = (rss_k - rss0) / k
                    row["cached_pools_measured"] = k
                row["rss_per_pool_built_kib"] = (rss2 - rss0) / max(1, pools2.get("builds", 1))
            res.append(row)
            log(f"growth {tier} n={n}: {row['rps']['median']:.0f} req/s p50 "
                f"{row['p50_us']['median'] / 1000:.2f} ms p99 {row['p99_us']['median'] / 1000:.2f} ms, "
                f"errors {row['errors']}, first request {row['first_request_us']['median'] / 1000:.1f} ms, "
                f"rss {rss2 // 1024} MiB, peak conns {smp.peak_total}/{smp.peak_tenant}")


# -------------------------------------------------------------------- main

def steady_state(b):
    """Brings each benchmark merchant to the state of one that has been
    trading: some thousand orders, then ANALYZE. Measuring from empty tables
    measures a transient: PostgreSQL plans the foreign-key checks of a
    long-lived connection (posd's pools) once, while `orders` is nearly
    empty, as a sequential scan, and keeps that plan until the table is
    analyzed, so every insert gets slower as the table grows (pgbench
    reconnects at every run and never sees it)."""
    for tier in TIERS:
        m = b.bm[tier]
        w = wrk(b, order_targets(m), b.conc, 2, f"steady-{tier}")
        if w["errors"]:
            raise RuntimeError(f"warming up {tier}: {w['errors']} errors")
    for db in sorted({b.bm[t]["db"] for t in TIERS}):
        b.data.psql("ANALYZE", db=db)
    log("benchmark merchants brought to a steady state (orders placed, tables analyzed)")


def pgbench_functions(b):
    """pgbench runs the SQL of this checkout. Where the posd under test
    predates the tenant functions that SQL calls (a before/after
    comparison), they are installed from tenant_migrations for pgbench's
    use; that posd never calls them."""
    # (migration, what shows it ran)
    steps = [("*_write_functions", "to_regproc('{s}.posd_sale_read') IS NOT NULL"),
             ("*_sale_in_one_call", "to_regproc('{s}.posd_bill_write') IS NOT NULL")]
    for tier in TIERS:
        m = b.bm[tier]
        schema = '"' + m["schema"] + '"'
        for pattern, ran in steps:
            have = b.data.rows("SELECT " + ran.format(s=schema), db=m["db"])[0][0]
            if have == "t":
                continue
            path = glob.glob(os.path.join(HERE, "..", "tenant_migrations", pattern, "up.sql"))[0]
            with open(path) as f:
                sql = f.read()
            b.data.psql(f"SET search_path TO {schema};\n" + sql, db=m["db"])
            log(f"{tier}: installed this checkout's {pattern[2:]} for pgbench")


def run(b, only):
    b.setup()
    b.seed_bench_merchants()
    try:
        steady_state(b)
        pgbench_functions(b)
        capture(b)
        if "reads" in only:
            ratio_section(b, "reads")
        for kind in ("orders", "refunds", "offline"):
            if kind in only:
                ratio_section(b, kind)
        if "routing" in only:
            routing(b)
        if "growth" in only:
            growth(b)
        if "moves" in only:
            moves.run(b)
        if "noisy" in only:
            noisy.run(b)
        if "propagation" in only:
            propagation.run(b)
    except TimeoutError as e:
        # Report what was measured; the rest is marked missing.
        log(f"stopping early: {e}")
        b.results["incomplete"] = str(e)
    b.results["elapsed_s"] = round(time.monotonic() - b.started, 1)
    with open(os.path.join(b.out, "results.json"), "w") as f:
        json.dump(b.results, f, indent=2)
    text = report.render(b.results)
    with open(os.path.join(b.out, "results.md"), "w") as f:
        f.write(text)
    print(text)
    log(f"done in {b.results['elapsed_s']}s; results in {b.out}")
