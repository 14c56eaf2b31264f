"""The moves section: live tier moves of a trading merchant (BENCHMARKS.md,
"Tier moves").

1. A large merchant, generated with SQL in the shared tier, is moved shared
   → dedicated and back while clients keep placing orders for it and for an
   unrelated shared-tier merchant. Side by side in the same run: a raw
   binary `COPY` of the same rows out of the source into an empty copy of
   the tables on the target server (a tenant posd provisioned for that),
   idle, and under the same load (the clients then order for a stand-in
   merchant placed as the source is, so that the moving merchant does not
   grow meanwhile).
2. A small merchant moved 10 times between every pair of tiers while
   clients place orders: the fence (fenceMs) over the 10 moves.

Clients are Python threads, one keep-alive connection each, that retry an
order answered 503 with `Retry-After` (same `Idempotency-Key`) and count
anything else that is not 201 as an error. Standard library only; talks
only to 127.0.0.1; every loop is bounded in count and time.
"""

import datetime
import http.client
import json
import os
import random
import subprocess
import threading
import time
import uuid

from common import PRICE, PRODUCTS, log, stats

# The data-plane tables, parents before children (the move copies them in
# such an order too).
TABLES = ("categories", "products", "product_versions", "inventory_levels", "stock_movements",
          "customers", "orders", "order_lines", "payments", "refunds", "refund_lines",
          "idempotency_keys")
SHARED = "tenant_shared"
# The longest the suite follows one move of the large merchant before it
# cancels it and reports it as it stood: (full, quick).
MOVE_TIMEOUT = (3600, 600)
# A 503 with Retry-After is retried after this pause (the integration tests
# retry after 10 ms; posd asks for 1 s, which a client may shorten).
RETRY_PAUSE = 0.02
MAX_ATTEMPTS = 500
# Tiers the small merchant visits: every ordered pair of tiers once in the
# first six moves.
FENCE_TOUR = ("dedicated", "schema", "shared", "schema", "dedicated", "shared")


def q(name):
    return '"' + name.replace('"', '""') + '"'


# ------------------------------------------------------------------ clients

class Load:
    """Clients placing orders through posd until stopped: `plan` is a list
    of (name, merchant, clients, pause between orders in s)."""

    def __init__(self, b, plan, seconds):
        self.b = b
        self.plan = plan
        self.end = time.monotonic() + seconds
        self.stopping = threading.Event()
        self.done = {name: [] for name, *_ in plan}      # (time done, latency s)
        self.retried = {name: [] for name, *_ in plan}   # times of 503 + Retry-After
        self.errors = {name: [] for name, *_ in plan}    # (time, what)
        self.threads = []

    def start(self):
        for name, m, clients, pause in self.plan:
            for i in range(clients):
                t = threading.Thread(target=self.client, args=(name, m, pause), daemon=True,
                                     name=f"load-{name}-{i}")
                t.start()
                self.threads.append(t)
        return self

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=60)

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def client(self, name, m, pause):
        host, port = "127.0.0.1", self.b.posd.port
        conn = http.client.HTTPConnection(host, port, timeout=30)
        triples = [m["products"][3 * t:3 * t + 3] for t in range(len(m["products"]) // 3)]
        done, retried, errors = self.done[name], self.retried[name], self.errors[name]
        while not self.stopping.is_set() and time.monotonic() < self.end:
            p = random.choice(triples)
            body = json.dumps({"lines": [{"productId": x, "quantity": 1} for x in p],
                               "payments": [{"method": "card", "amountMinor": 3 * PRICE,
                                             "reference": "bench"}]})
            headers = {"Authorization": "Bearer " + m["token"], "Content-Type": "application/json",
                       "Idempotency-Key": str(uuid.uuid4())}
            t0 = time.monotonic()
            for _ in range(MAX_ATTEMPTS):
                try:
                    conn.request("POST", "/api/v2/POS/orders", body, headers)
                    r = conn.getresponse()
                    data = r.read()
                except (OSError, http.client.HTTPException) as e:
                    errors.append((time.monotonic(), f"connection: {type(e).__name__}: {e}"))
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=30)
                    break
                if r.status == 201:
                    done.append((time.monotonic(), time.monotonic() - t0))
                    break
                if r.status == 503 and r.getheader("Retry-After"):
                    retried.append(time.monotonic())
                    time.sleep(RETRY_PAUSE)
                    continue
                errors.append((time.monotonic(), f"{r.status} {data[:300].decode(errors='replace')}"))
                break
            else:
                errors.append((time.monotonic(), f"503 after {MAX_ATTEMPTS} attempts"))
            if pause:
                self.stopping.wait(pause)
        conn.close()

    def rate(self, name, t0, t1):
        """Orders per second answered 201 between t0 and t1 (monotonic)."""
        if t1 <= t0:
            return None
        return sum(1 for t, _ in self.done[name] if t0 <= t < t1) / (t1 - t0)

    def window(self, name, t0, t1):
        """What the clients of `name` saw between t0 and t1."""
        lat = [l for t, l in self.done[name] if t0 <= t < t1]
        errs = [w for t, w in self.errors[name] if t0 <= t < t1]
        kinds = {}
        for w in errs:
            k = w[:160]
            kinds[k] = kinds.get(k, 0) + 1
        return {"orders": len(lat), "rate": self.rate(name, t0, t1),
                "retried_503": sum(1 for t in self.retried[name] if t0 <= t < t1),
                "errors": len(errs), "error_kinds": kinds,
                "longest_ms": 1000 * max(lat) if lat else None}


# ------------------------------------------------------------------- moves

def parse_time(s):
    """An RFC 3339 time as chrono writes it (up to 9 fraction digits)."""
    if not s:
        return None
    s = s.replace("Z", "+00:00")
    if "." in s:
        head, rest = s.split(".", 1)
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        s = head + "." + rest[:i][:6].ljust(6, "0") + rest[i:]
    return datetime.datetime.fromisoformat(s)


class Activity:
    """Samples, every 0.5 s, what the owner role's sessions (the move's
    connections; posd serves requests as the app role) are running, from
    pg_stat_activity: the statement (literals folded) and its wait event.
    Counted per phase of the move, so that a phase's time can be read as
    the statements it spent it in."""

    SQL = r"""SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'),
                     left(regexp_replace(regexp_replace(query, '\s+', ' ', 'g'),
                                         '''[^'']*''|\m[0-9]+\M', '?', 'g'), 150)
                FROM pg_stat_activity
               WHERE usename = 'posd_owner' AND state = 'active' AND pid <> pg_backend_pid()"""

    def __init__(self, b):
        self.b = b
        self.phase = "prepare"
        self.counts = {}
        self.stopping = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        end = time.monotonic() + max(60, self.b.deadline.left())
        while not self.stopping.is_set() and time.monotonic() < end:
            try:
                for wait, query in self.b.data.rows(self.SQL):
                    per = self.counts.setdefault(self.phase, {})
                    k = f"{wait} | {query}"
                    per[k] = per.get(k, 0) + 1
            except Exception:  # noqa: BLE001 - a missed sample is not fatal
                pass
            self.stopping.wait(0.5)

    def top(self, n=6):
        return {ph: sorted(((c, k) for k, c in per.items()), reverse=True)[:n]
                for ph, per in self.counts.items()}


def run_move(b, m, tier, timeout, sample=False):
    """Starts a move of `m` to `tier` and follows it (every 0.1 s) until it
    ends; answers the move with the client's timeline (a point at every
    phase and every catch-up round) and, with `sample`, what its
    connections ran per phase (Activity)."""
    p = b.posd
    st, r = p.call("POST", f"/admin/tenants/{m['id']}/move", b.admin, {"tier": tier})
    if st != 202:
        raise RuntimeError(f"starting a move of {m['slug']} to {tier}: {st} {r}")
    run = r["move"]["id"]
    t0 = time.monotonic()
    act = Activity(b) if sample else None
    if act:
        act.t.start()
    timeline, last, copied, timed_out = [], None, None, None
    mv = r["move"]
    try:
        while True:
            st, g = p.call("GET", f"/admin/tenants/{m['id']}/moves/{run}", b.admin)
            if st != 200:
                raise RuntimeError(f"following move {run}: {st} {g}")
            mv = g["move"]
            now = time.monotonic()
            if act:
                act.phase = mv["phase"]
            if (mv["phase"], mv["rounds"]) != last:
                timeline.append({"t": round(now - t0, 2), "phase": mv["phase"],
                                 "backlog": mv["backlog"], "rounds": mv["rounds"]})
                last = (mv["phase"], mv["rounds"])
            if mv["phase"] == "copy":
                copied = mv.get("tables")
            if mv["status"] not in ("running", "cancelling"):
                break
            if (now - t0 > timeout or b.deadline.left() <= 0) and not timed_out:
                # Too long for this run: cancelled, if it has not flipped
                # yet, and reported as it stood.
                timed_out = {"after_s": round(now - t0, 1), "phase": mv["phase"],
                             "rounds": mv["rounds"], "backlog": mv["backlog"]}
                log(f"moves: move {run} of {m['slug']} to {tier} still {mv['phase']} after "
                    f"{now - t0:.0f}s (rounds {mv['rounds']}, backlog {mv['backlog']}); cancelling")
                st, c = p.call("POST", f"/admin/tenants/{m['id']}/moves/{run}/cancel", b.admin)
                timed_out["cancel"] = st
            if timed_out and now - t0 > timeout + 900:
                raise TimeoutError(f"move {run} of {m['slug']} to {tier} still {mv['phase']} "
                                   f"after {now - t0:.0f}s")
            time.sleep(0.1)
    finally:
        if act:
            act.stopping.set()
            act.t.join(timeout=10)
    t_end = time.monotonic()
    created, flipped, finished = (parse_time(mv.get(k)) for k in
                                  ("createdAt", "flippedAt", "finishedAt"))
    res = {"run": run, "from": mv["sourceTier"], "to": mv["targetTier"], "status": mv["status"],
           "phase": mv["phase"], "error_code": mv.get("errorCode"), "error": mv.get("error"),
           "fence_ms": mv.get("fenceMs"), "phase_ms": mv.get("phaseMs") or {},
           "rounds": mv.get("rounds"), "tables": mv.get("tables"), "copied": copied,
           "timeline": timeline, "t_start": t0, "t_end": t_end,
           "client_s": round(t_end - t0, 2), "timed_out": timed_out}
    if act:
        res["activity"] = act.top()
    if created and flipped:
        res["to_flip_s"] = (flipped - created).total_seconds()
        # The fence phase has no phaseMs entry: the flip records the phase
        # after it. Its time is what is left before the flip.
        before = sum(res["phase_ms"].get(k, 0) for k in
                     ("prepare", "capture", "copy", "catch_up", "verify"))
        res["fence_phase_ms"] = max(0, round(1000 * res["to_flip_s"] - before))
    if created and finished:
        res["total_s"] = (finished - created).total_seconds()
    # When the clients saw the flip: the first sample past the fence phase.
    for ph in timeline:
        if ph["phase"] in ("retire", "retained", "cleaned"):
            res["t_flip"] = t0 + ph["t"]
            break
    return res


def cleanup(b):
    st, r = b.posd.call("POST", "/admin/tenants/cleanup-moves", b.admin, {"all": True},
                        timeout=1800)
    if st != 200:
        raise RuntimeError(f"cleanup-moves: {st} {r}")
    errs = [c for c in r["cleaned"] if c.get("error")]
    if errs:
        log(f"cleanup-moves reported errors: {errs}")
    return r["cleaned"]


def placement(b, m):
    """(database, schema) of the merchant's tables now."""
    st, t = b.posd.call("GET", f"/admin/tenants/{m['id']}", b.admin)
    assert st == 200, (st, t)
    if t["tier"] != "dedicated":
        return "posd", t["schemaName"]
    db = b.data.rows(f"SELECT database_name FROM tenant_databases WHERE id = '{t['databaseId']}'",
                     db="posd")[0][0]
    return db, t["schemaName"]


# -------------------------------------------------------------- the data

FUNCS = """
CREATE FUNCTION pg_temp.u7(ms bigint, seed text) RETURNS uuid LANGUAGE sql IMMUTABLE AS
  $$ SELECT (lpad(to_hex(ms), 12, '0') || '7' || substr(md5(seed), 1, 3) || '8'
             || substr(md5(seed), 4, 15))::uuid $$;
CREATE FUNCTION pg_temp.price(i int) RETURNS bigint LANGUAGE sql IMMUTABLE AS
  $$ SELECT (CASE WHEN i < 30 THEN 250 ELSE 100 + (i % 97) * 5 END)::bigint $$;
CREATE FUNCTION pg_temp.bps(i int) RETURNS int LANGUAGE sql IMMUTABLE AS
  $$ SELECT CASE WHEN i < 30 OR i % 3 = 0 THEN 0 ELSE 2000 END $$;
"""


def generate(b, m, orders, products, chunk=100_000):
    """The merchant's history, in the shared tier, as the superuser with the
    merchant bound (`posd.merchant_id`): `products` products (the first 30
    at PRICE without tax, the ones the clients order) with their version,
    stock level and receiving movement; `orders` orders of three lines each
    (1-3 units, 20 % tax on two products in three) and one payment (card,
    or cash with change for one order in four), 30 s apart over the past
    year. Ids are UUIDv7 as posd makes them (time first). Every CHECK and
    foreign key holds, and is checked as the rows go in."""
    mid = m["id"]
    staff = b.data.rows(f"SELECT id FROM staff_users WHERE merchant_id = '{mid}'", db="posd")[0][0]
    now_ms = int(time.time() * 1000)
    step = 30_000
    t0 = now_ms - (orders + 100) * step           # the first order
    p0 = t0 - 30 * 86_400_000                     # the catalog, a month before
    head = (f"BEGIN;\nSELECT set_config('posd.merchant_id', '{mid}', true);\n"
            f"SET LOCAL search_path = {SHARED};\n{FUNCS}\n")
    started = time.monotonic()
    b.data.psql(head + f"""
INSERT INTO products (merchant_id, id, sku, name, price_minor, tax_rate_bps, track_stock,
                      created_at, updated_at)
SELECT '{mid}', pg_temp.u7({p0} + p, 'p' || p), 'SKU-' || lpad(p::text, 4, '0'), 'Product ' || p,
       pg_temp.price(p), pg_temp.bps(p), true, to_timestamp(({p0} + p) / 1000.0),
       to_timestamp(({p0} + p) / 1000.0)
  FROM generate_series(0, {products - 1}) p;
INSERT INTO inventory_levels (merchant_id, product_id, on_hand, updated_at)
SELECT '{mid}', pg_temp.u7({p0} + p, 'p' || p), 1000000000, to_timestamp(({p0} + p) / 1000.0)
  FROM generate_series(0, {products - 1}) p;
INSERT INTO stock_movements (merchant_id, id, product_id, delta, reason, staff_id, created_at)
SELECT '{mid}', pg_temp.u7({p0} + p, 'r' || p), pg_temp.u7({p0} + p, 'p' || p), 1000000000,
       'receive', '{staff}', to_timestamp(({p0} + p) / 1000.0)
  FROM generate_series(0, {products - 1}) p;
COMMIT;
""", db="posd")
    line = "LATERAL (SELECT ((o * 3 + k) % {n})::int AS p, 1 + (o + k) % 3 AS q) y".format(n=products)
    for a in range(1, orders + 1, chunk):
        b.deadline.check("generating the large merchant's orders")
        z = min(orders, a + chunk - 1)
        b.data.psql(head + f"""
INSERT INTO orders (merchant_id, id, status, source, staff_id, currency, gross_minor,
                    discount_minor, tax_minor, total_minor, tendered_minor, change_minor,
                    created_at, recorded_at)
SELECT '{mid}', pg_temp.u7({t0} + o * {step}, 'o' || o), 'completed', 'till', '{staff}', 'EUR',
       s.g, 0, s.t, s.g + s.t, w.tend, w.tend - (s.g + s.t), x.ts, x.ts
  FROM generate_series({a}::bigint, {z}) o,
       LATERAL (SELECT to_timestamp(({t0} + o * {step}) / 1000.0) AS ts) x,
       LATERAL (SELECT sum(pg_temp.price(p) * q)::bigint AS g,
                       sum(pg_temp.price(p) * q * pg_temp.bps(p) / 10000)::bigint AS t
                  FROM generate_series(1, 3) k, {line}) s,
       LATERAL (SELECT CASE WHEN o % 4 = 0 THEN (s.g + s.t + 499) / 500 * 500
                            ELSE s.g + s.t END AS tend) w;
INSERT INTO order_lines (merchant_id, order_id, line_no, product_id, sku, name, quantity,
                         unit_price_minor, tax_rate_bps, gross_minor, discount_minor, tax_minor,
                         total_minor)
SELECT '{mid}', pg_temp.u7({t0} + o * {step}, 'o' || o), k, pg_temp.u7({p0} + p, 'p' || p),
       'SKU-' || lpad(p::text, 4, '0'), 'Product ' || p, q, pg_temp.price(p), pg_temp.bps(p),
       pg_temp.price(p) * q, 0, pg_temp.price(p) * q * pg_temp.bps(p) / 10000,
       pg_temp.price(p) * q + pg_temp.price(p) * q * pg_temp.bps(p) / 10000
  FROM generate_series({a}::bigint, {z}) o, generate_series(1, 3) k, {line};
INSERT INTO payments (merchant_id, id, order_id, method, tendered_minor, amount_minor, reference,
                      created_at)
SELECT '{mid}', pg_temp.u7({t0} + o * {step}, 'pay' || o), pg_temp.u7({t0} + o * {step}, 'o' || o),
       CASE WHEN w.change > 0 THEN 'cash' ELSE 'card' END, w.tend, w.total,
       CASE WHEN w.change > 0 THEN NULL ELSE 'card-' || o END, x.ts
  FROM generate_series({a}::bigint, {z}) o,
       LATERAL (SELECT to_timestamp(({t0} + o * {step}) / 1000.0) AS ts) x,
       LATERAL (SELECT total_minor AS total, tendered_minor AS tend, change_minor AS change
                  FROM orders WHERE merchant_id = '{mid}'
                   AND id = pg_temp.u7({t0} + o * {step}, 'o' || o)) w;
COMMIT;
""", db="posd", timeout=1800)
        if z == orders or (z // chunk) % 5 == 0:
            log(f"moves: {z} of {orders} orders generated ({time.monotonic() - started:.0f}s)")
    gen_s = time.monotonic() - started
    t1 = time.monotonic()
    for t in TABLES:
        b.data.psql(f"VACUUM (ANALYZE) {SHARED}.{t}", db="posd", timeout=1800)
    b.data.psql("CHECKPOINT")
    ids = [r[0] for r in b.data.rows(
        f"SELECT id FROM {SHARED}.products WHERE merchant_id = '{mid}' AND sku < 'SKU-{PRODUCTS:04d}' "
        "ORDER BY sku", db="posd")]
    m["products"] = ids
    return {"generate_s": round(gen_s, 1), "vacuum_s": round(time.monotonic() - t1, 1)}


def merchant_rows(b, db, schema, mid):
    sql = " UNION ALL ".join(
        f"SELECT '{t}', count(*) FROM {q(schema)}.{t} WHERE merchant_id = '{mid}'" for t in TABLES)
    return {t: int(n) for t, n in b.data.rows(sql, db=db)}


# --------------------------------------------------------------- raw COPY

def columns(b, db, schema):
    rows = b.data.rows(f"""
        SELECT c.relname, string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE n.nspname = '{schema}' AND c.relkind = 'r'
         GROUP BY c.relname""", db=db)
    return dict(rows)


def raw_copy(b, src, dst, mid):
    """The merchant's rows of every table, out of `src` (db, schema) with
    binary `COPY (SELECT ... WHERE merchant_id = ...) TO STDOUT` and into the
    empty tables of `dst` with `COPY ... FROM STDIN`, one psql at each end
    per table, piped; parents first. Every table is read in one snapshot of
    the source (exported by a session held open meanwhile), as the move
    reads them: under load, tables read in snapshots of their own would
    hold lines of orders that the orders read before lacks. As the superuser
    (no row-level security), with `posd.replica` on at the target as the
    move's sessions have it (the product history trigger leaves the rows to
    the copy). Answers the seconds and the rows per table; the target is
    emptied afterwards."""
    cols = columns(b, dst[0], dst[1])
    b.data.psql("CHECKPOINT")
    rows = {}
    env_in = dict(b.data.env(), PGOPTIONS="-c posd.replica=on")
    started = time.monotonic()
    holder = subprocess.Popen(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", src[0]],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=b.data.env())
    try:
        holder.stdin.write("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
                           "SELECT pg_export_snapshot();\n")
        holder.stdin.flush()
        snapshot = holder.stdout.readline().strip()
        if not snapshot:
            raise RuntimeError("raw COPY: no snapshot exported")
        for t in TABLES:
            out = (f"COPY (SELECT {cols[t]} FROM {q(src[1])}.{t} WHERE merchant_id = '{mid}') "
                   "TO STDOUT (FORMAT binary)")
            into = f"COPY {q(dst[1])}.{t} ({cols[t]}) FROM STDIN (FORMAT binary)"
            p1 = subprocess.Popen(
                ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", src[0],
                 "-c", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                 "-c", f"SET TRANSACTION SNAPSHOT '{snapshot}'", "-c", out, "-c", "COMMIT"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=b.data.env())
            p2 = subprocess.Popen(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", dst[0], "-c", into],
                                  stdin=p1.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=env_in)
            p1.stdout.close()
            try:
                o2, e2 = p2.communicate(timeout=max(60, b.deadline.left()))
                e1 = p1.communicate(timeout=60)[1]
            except subprocess.TimeoutExpired:
                p1.kill()
                p2.kill()
                raise TimeoutError(f"raw COPY of {t}")
            if p1.returncode or p2.returncode:
                raise RuntimeError(f"raw COPY of {t}: {e1.decode()[-500:]} {e2.decode()[-500:]}")
            rows[t] = int(o2.decode().split()[-1])
    finally:
        if holder.poll() is None:
            holder.stdin.write("COMMIT;\n")
            holder.stdin.close()
            holder.wait(timeout=60)
    secs = time.monotonic() - started
    b.data.psql("TRUNCATE " + ", ".join(f"{q(dst[1])}.{t}" for t in TABLES), db=dst[0])
    return secs, rows


# --------------------------------------------------------------- sections

def large(b, res):
    # POSD_BENCH_MOVE_ORDERS sets another size (for a look at a size in
    # between; the write-up uses the defaults).
    n_orders = int(os.environ.get("POSD_BENCH_MOVE_ORDERS") or (20_000 if b.quick else 1_000_000))
    n_products = 200 if b.quick else 2_000
    window = 5 if b.quick else 15
    after = 3 if b.quick else 10
    m = b.create_merchant("move-large", "shared")
    log(f"moves: generating {n_orders} orders of {n_products} products in the shared tier")
    gen = generate(b, m, n_orders, n_products)
    rows0 = merchant_rows(b, "posd", SHARED, m["id"])
    log(f"moves: generated in {gen['generate_s']}s (vacuum and analyze {gen['vacuum_s']}s): "
        f"{sum(rows0.values())} rows {rows0}")
    res["large"] = {"orders": n_orders, "products": n_products, "rows": rows0, **gen,
                    "clients": b.conc, "unrelated_clients": 2, "window_s": window,
                    "directions": []}
    # Empty copies of the tables on each target server: tenants posd
    # provisions (the same migrations as a move's target).
    raw_targets = {}
    for tier in ("dedicated", "schema"):
        t = b.create_merchant(f"move-raw-{tier}", tier)
        raw_targets[tier] = placement(b, t)
    other = b.bm["shared"]
    # Stand-ins: while the raw COPY runs under load, the 8 clients order for
    # another merchant placed as the source is, so that the load is the
    # same and the moving merchant does not grow meanwhile.
    standin = {"shared": b.create_merchant("move-standin", "shared"), "dedicated": b.bm["dedicated"]}
    b.add_products(standin["shared"], PRODUCTS)
    for to in ("dedicated", "shared"):
        frm = "shared" if to == "dedicated" else "dedicated"
        src = placement(b, m)
        dst = raw_targets["dedicated" if to == "dedicated" else "schema"]
        d = {"from": frm, "to": to,
             "raw_target": "a dedicated tenant's database" if to == "dedicated"
             else "a schema tenant's schema in the platform database"}
        res["large"]["directions"].append(d)
        d["rows_before"] = merchant_rows(b, *src, m["id"])
        log(f"moves: raw COPY {src} -> {dst}, idle")
        d["raw_idle_s"], d["raw_idle_rows"] = raw_copy(b, src, dst, m["id"])
        log(f"moves: raw COPY idle {d['raw_idle_s']:.1f}s, {sum(d['raw_idle_rows'].values())} rows")
        plan = [("standin", standin[frm], b.conc, 0), ("unrelated", other, 2, 0)]
        with Load(b, plan, max(60, b.deadline.left())) as load:
            time.sleep(1)  # connections open, pools warm
            log(f"moves: under load, raw COPY {src} -> {dst}")
            tr = time.monotonic()
            d["raw_load_s"], d["raw_load_rows"] = raw_copy(b, src, dst, m["id"])
            d["raw_load"] = {k: load.window(k, tr, tr + d["raw_load_s"]) for k in ("standin", "unrelated")}
        log(f"moves: raw COPY under load {d['raw_load_s']:.1f}s, "
            f"{sum(d['raw_load_rows'].values())} rows")
        b.data.psql("CHECKPOINT")
        plan = [("moving", m, b.conc, 0), ("unrelated", other, 2, 0)]
        with Load(b, plan, max(60, b.deadline.left())) as load:
            time.sleep(1)
            tb = time.monotonic()
            time.sleep(window)
            te = time.monotonic()
            d["before"] = {k: load.window(k, tb, te) for k in ("moving", "unrelated")}
            log(f"moves: moving {m['slug']} to {to} under load")
            mv = run_move(b, m, to, timeout=min(MOVE_TIMEOUT[b.quick], max(60, b.deadline.left())),
                          sample=True)
            d["move"] = mv
            time.sleep(after)
            ta = time.monotonic()
            d["during"] = {k: load.window(k, mv["t_start"], mv["t_end"]) for k in ("moving", "unrelated")}
            if mv.get("t_flip"):
                d["to_flip"] = {k: load.window(k, mv["t_start"], mv["t_flip"]) for k in ("moving", "unrelated")}
                f0 = mv["t_flip"] - 3
                d["around_flip"] = {k: load.window(k, f0, f0 + 6) for k in ("moving", "unrelated")}
            d["after"] = {k: load.window(k, mv["t_end"], ta) for k in ("moving", "unrelated")}
            d["whole"] = {k: load.window(k, tb, ta) for k in ("moving", "unrelated")}
        log(f"moves: {frm} -> {to}: {mv['status']} in {mv.get('total_s')}s "
            f"(flip after {mv.get('to_flip_s')}s), phases {mv['phase_ms']}, fence {mv['fence_ms']} ms, "
            f"rounds {mv['rounds']}; orders/s moving {d['before']['moving']['rate']:.0f} before, "
            f"{d['during']['moving']['rate']:.0f} during; unrelated "
            f"{d['before']['unrelated']['rate']:.0f} before, {d['during']['unrelated']['rate']:.0f} during; "
            f"503s retried {d['whole']['moving']['retried_503']}, errors "
            f"{d['whole']['moving']['errors']} + {d['whole']['unrelated']['errors']}")
        if mv["status"] != "done":
            log(f"moves: the move ended {mv['status']}: {mv['error_code']} {mv['error']}")
            break
        # The retained source goes (it holds a copy of the merchant), and
        # the shared tier is vacuumed after the merchant's rows left it.
        t1 = time.monotonic()
        d["cleaned"] = cleanup(b)
        if to == "dedicated":
            for t in TABLES:
                b.data.psql(f"VACUUM (ANALYZE) {SHARED}.{t}", db="posd", timeout=1800)
        else:
            b.data.psql("ANALYZE", db="posd", timeout=1800)
        d["cleanup_s"] = round(time.monotonic() - t1, 1)
        log(f"moves: cleanup and vacuum {d['cleanup_s']}s")


def fence(b, res):
    """10 moves of a small merchant between every pair of tiers, clients
    placing orders throughout (8 clients, each at most 10 orders/s)."""
    m = b.create_merchant("move-small", "shared")
    b.add_products(m, PRODUCTS)
    seed = 300
    with Load(b, [("small", m, b.conc, 0)], 60) as load:
        end = time.monotonic() + 60
        while len(load.done["small"]) < seed and time.monotonic() < end:
            time.sleep(0.05)
    seeded = len(load.done["small"])
    moves = []
    pause = 0.1
    with Load(b, [("small", m, b.conc, pause)], max(60, b.deadline.left())) as load:
        time.sleep(1)
        tb = time.monotonic()
        for i in range(10):
            to = FENCE_TOUR[i % len(FENCE_TOUR)]
            mv = run_move(b, m, to, timeout=120)
            w = load.window("small", mv["t_start"], mv["t_end"])
            moves.append({k: mv.get(k) for k in ("from", "to", "status", "error_code", "error",
                                                 "fence_ms", "phase_ms", "rounds", "to_flip_s",
                                                 "fence_phase_ms", "total_s", "client_s")}
                         | {"clients": w})
            log(f"moves: small merchant {mv['from']} -> {to}: {mv['status']}, fence {mv['fence_ms']} ms, "
                f"flip after {mv.get('to_flip_s')}s; 503s retried {w['retried_503']}, errors {w['errors']}, "
                f"longest order {w['longest_ms'] or 0:.0f} ms")
            if mv["status"] != "done":
                break
            cleanup(b)
        te = time.monotonic()
        whole = load.window("small", tb, te)
    fences = [x["fence_ms"] for x in moves if x.get("fence_ms") is not None]
    srt = sorted(fences)
    res["fence"] = {"moves": moves, "seed_orders": seeded,
                    "clients": b.conc, "pause_s": pause, "whole": whole,
                    "fence_ms": stats(fences),
                    # nearest rank: with 10 moves p99 is the largest
                    "p50_ms": srt[(len(srt) - 1) // 2] if srt else None,
                    "p99_ms": srt[max(0, -(-99 * len(srt) // 100) - 1)] if srt else None,
                    "max_ms": srt[-1] if srt else None,
                    "orders_after": merchant_rows(b, *placement(b, m), m["id"])["orders"]}
    log(f"moves: fence over {len(fences)} moves: p50 {res['fence']['p50_ms']} ms, "
        f"p99 {res['fence']['p99_ms']} ms, max {res['fence']['max_ms']} ms")


def run(b):
    res = b.results.setdefault("moves", {})
    # The retire phase waits out the placement cache; pools sized for the
    # clients (8 on the moving merchant, 2 on an unrelated shared-tier one).
    b.start_posd({**b.tier_env, "POSD_POOL_SIZE": str(b.conc + 2),
                  "POSD_PLACEMENT_CACHE_TTL": "1s"}, name="posd-moves")
    res["placement_cache_ttl"] = "1s"
    fence(b, res)
    large(b, res)
