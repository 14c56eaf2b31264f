#!/usr/bin/env python3
"""posd benchmark driver. Run it through `bench/run` (see BENCHMARKS.md).

Sections, in order: setup, capture (the SQL posd sends), reads, orders,
routing, growth (cost growth per tier, with the fleet figures for the
dedicated tier), moves (live tier moves under load, bench/moves.py); and,
only with --only noisy, noisy (one merchant flooding the global pool,
bench/noisy.py); only with --only propagation, propagation (how long a
change through one instance takes to reach another, bench/propagation.py).
Every figure is the median of RUNS runs, with min and max. Standard
library only; talks only to 127.0.0.1; every loop is bounded in
count and time.
"""

import argparse
import atexit
import datetime
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sections  # noqa: E402
import server  # noqa: E402
from common import (DEFAULT_SECTIONS, OWNER_PASSWORD, PRICE, PRODUCTS, SECTIONS, TIERS,  # noqa: E402
                    Deadline, log)

HERE = os.path.dirname(os.path.abspath(__file__))
# Seconds added to the time budget when the moves section runs: (full, quick).
MOVES_BUDGET = (10800, 420)
# The same for the noisy section.
NOISY_BUDGET = (420, 120)


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.runs = 3
        self.dur = 2 if self.quick else 5
        self.conc = args.concurrency
        self.fleet = 100 if self.quick else 1000
        self.steps = [10, 100] if self.quick else [10, 100, 1000]
        budget = 190 if self.quick else 870
        if "moves" in args.only.split(","):
            # The moves section has a budget of its own (see BENCHMARKS.md).
            budget += MOVES_BUDGET[self.quick]
        if "noisy" in args.only.split(","):
            budget += NOISY_BUDGET[self.quick]
        self.deadline = Deadline(args.budget or budget)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        # bench/run sets CARGO_TARGET_DIR to the benchmark's own target directory.
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(HERE), "target", "bench"))
        self.out = os.path.abspath(args.out or os.path.join(target, "results", stamp))
        os.makedirs(self.out, exist_ok=True)
        self.results = {"mode": "quick" if self.quick else "full", "runs": self.runs,
                        "duration_s": self.dur, "concurrency": self.conc}
        self.data = None
        self.posd = None
        self.started = time.monotonic()

    # ---------------------------------------------------------------- setup

    def machine(self):
        model = ""
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        model = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        mem = 0
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) // 1024
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        pgb = subprocess.run(["pgbench", "--version"], capture_output=True, text=True).stdout.strip()
        return {"nproc": os.cpu_count(), "memory_mib": mem, "cpu": model,
                "kernel": platform.release(), "postgres": self.version,
                "wrk": wrk.strip(), "pgbench": pgb}

    def setup(self):
        # posd initialises its embedded PostgreSQL on first use (initdb, its
        # roles and database, generated secrets); `posd migrate` does that,
        # applies the platform migrations and stops it. The suite then starts
        # it with its settings and keeps it running (see server.DataDir).
        if os.geteuid() == 0:
            # As root posd runs the cluster as `postgres`, which must reach it.
            os.chmod(self.out, 0o755)
        self.data = server.DataDir(tempfile.mkdtemp(prefix="posd-data-", dir=self.out))
        server.command(self.args.posd, self.data, "migrate")
        self.data.configure(server.PG_SETTINGS)
        self.data.start()
        # The control route's role: BYPASSRLS, so posd itself has no such
        # role; made by the superuser below, before the route's first request.
        control_pw = secrets.token_hex(16)
        self.base_env = {
            "POSD_BENCH_CONTROL_URL": self.data.url("posd_bench_control", control_pw, "posd"),
        }
        if self.args.transaction_pooler:
            self.base_env["POSD_TRANSACTION_POOLER"] = "true"
            self.results["transaction_pooler"] = True
        # Pools sized so that posd may use as many connections as wrk has
        # connections (pgbench runs with as many clients).
        self.tier_env = {
            "POSD_POOL_SIZE": str(self.conc),
            "POSD_TENANT_POOL_SIZE": str(self.conc),
            "POSD_CONNECTION_BUDGET": "60",
        }
        self.start_posd(self.tier_env)
        self.data.psql(f"""
            CREATE ROLE posd_bench_control LOGIN BYPASSRLS PASSWORD '{control_pw}';
            CREATE EXTENSION pg_stat_statements;
        """)
        self.data.psql("""
            GRANT USAGE ON SCHEMA tenant_shared TO posd_bench_control;
            GRANT SELECT ON tenant_shared.products TO posd_bench_control;
            ALTER ROLE posd_bench_control SET search_path = tenant_shared;
        """, db="posd")
        self.version = self.data.version()
        log(f"PostgreSQL ({self.version}) on 127.0.0.1:{self.data.port}, data in {self.data.path}")
        self.results["machine"] = self.machine()
        self.admin = self.posd.admin_token()
        # Every plan's request rate out of reach (a billion a minute), so
        # that the buckets are checked on every request but never refuse
        # one. A binary from before plans has no such route (404).
        for plan in ("starter", "pro", "enterprise"):
            st, r = self.posd.call("PATCH", f"/admin/plans/{plan}", self.admin,
                                   {"requestsPerMinute": 1_000_000_000})
            assert st in (200, 404), (plan, st, r)

    def start_posd(self, env, name="posd"):
        """Starts posd with these settings, stopping the one running first."""
        t0 = time.monotonic()
        if self.posd:
            self.posd.stop()
        t1 = time.monotonic()
        self.posd = server.Posd(self.args.posd, self.data, self.out,
                                {**self.base_env, **env}, name).start()
        log(f"{name} serving on {self.posd.base} (previous one stopped in {t1 - t0:.1f}s, "
            f"started in {time.monotonic() - t1:.1f}s)")
        return self.posd

    def teardown(self):
        if self.posd:
            self.posd.stop()
            self.posd = None
        if self.data:
            self.data.stop(keep=self.args.keep)
            if not self.args.keep:
                shutil.rmtree(self.data.path, ignore_errors=True)
            self.data = None

    # -------------------------------------------------------------- seeding

    def create_merchant(self, slug, tier):
        """Through the admin API: create, provision, log in."""
        p = self.posd
        email, password = f"owner@{slug}.example", OWNER_PASSWORD
        st, m = p.call("POST", "/admin/merchants", self.admin, {
            "slug": slug, "name": slug, "timezone": "Europe/Paris", "currency": "EUR",
            "owner": {"email": email, "password": password}})
        assert st == 201, (st, m)
        if tier != "shared":
            self.provision(m["id"], tier)
        return {"id": m["id"], "slug": slug, "tier": tier,
                "token": p.login(slug, email, password),
                "schema": m["schemaName"] if tier == "shared" else None}

    def provision(self, merchant_id, tier):
        st, r = self.posd.call("POST", "/admin/tenant/provision", self.admin,
                               {"merchantId": merchant_id, "tier": tier}, timeout=120)
        if st != 201 or r["run"]["status"] != "ready":
            raise RuntimeError(f"provisioning {merchant_id} onto {tier}: {st} {r}")

    def add_products(self, m, n, stock=True):
        ids = []
        for i in range(n):
            st, prod = self.posd.call("POST", "/products", m["token"], {
                "sku": f"SKU-{i:04d}", "name": f"Product {i}", "priceMinor": PRICE,
                "taxRateBps": 0, "trackStock": stock})
            assert st == 201, (st, prod)
            ids.append(prod["id"])
            if stock:
                st, r = self.posd.call("POST", "/inventory/adjustments", m["token"], {
                    "productId": prod["id"], "delta": 1_000_000_000, "reason": "receive"})
                assert st == 201, (st, r)
        m["products"] = ids
        return ids

    def placement(self, m):
        st, t = self.posd.call("GET", f"/admin/tenants/{m['id']}", self.admin)
        assert st == 200, (st, t)
        return t

    def seed_bench_merchants(self):
        self.bm = {}
        for tier in TIERS:
            m = self.create_merchant(f"bench-{tier}", tier)
            self.add_products(m, PRODUCTS)
            t = self.placement(m)
            m["schema"] = t["schemaName"]
            m["db"] = "posd" if tier != "dedicated" else self.data.rows(
                f"SELECT database_name FROM tenant_databases WHERE merchant_id = '{m['id']}'",
                db="posd")[0][0]
            self.bm[tier] = m
        log("seeded one benchmark merchant per tier, 30 products each")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posd", required=True, help="the posd binary (release, feature bench-control)")
    ap.add_argument("--quick", action="store_true", help="shorter runs, 100 tenants (under 3 minutes)")
    ap.add_argument("--keep", action="store_true",
                    help="keep posd's data directory (its PostgreSQL cluster): "
                    "POSD_DATA_DIR=<it> posd serve runs on it again")
    ap.add_argument("--only", default=",".join(DEFAULT_SECTIONS),
                    help=f"comma-separated sections among {','.join(SECTIONS)} "
                    f"(default {','.join(DEFAULT_SECTIONS)})")
    ap.add_argument("--transaction-pooler", action="store_true",
                    help="serve with POSD_TRANSACTION_POOLER=true (unnamed statements, directly connected)")
    ap.add_argument("--concurrency", type=int, default=8, help="wrk connections = pgbench clients")
    ap.add_argument("--budget", type=int, help="time budget in seconds (default 870, quick 190; "
                    "the moves section adds 10800, quick 420; noisy 420, quick 120)")
    ap.add_argument("--out", help="result directory (default $CARGO_TARGET_DIR/results/<time>, "
                    "CARGO_TARGET_DIR defaulting to target/bench)")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    for s in only:
        if s not in SECTIONS:
            ap.error(f"unknown section {s}")
    b = Bench(args)
    atexit.register(b.teardown)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sections.run(b, only)


if __name__ == "__main__":
    main()
