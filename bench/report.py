"""Renders results.json as the Markdown tables of BENCHMARKS.md."""

import json
import sys


def f(s, scale=1.0, fmt="{:.0f}"):
    """median (min-max) of a stats dict."""
    if not s:
        return "n/a"
    return (f"{fmt.format(s['median'] * scale)} "
            f"({fmt.format(s['min'] * scale)}-{fmt.format(s['max'] * scale)})")


def render(r):
    out = []
    m = r.get("machine", {})
    out.append(f"Mode: {r.get('mode')}, {r.get('runs')} runs of {r.get('duration_s')} s each, "
               f"concurrency {r.get('concurrency')} (wrk connections = pgbench clients); "
               f"total {r.get('elapsed_s')} s.")
    out.append(f"Machine: {m.get('nproc')} CPUs ({m.get('cpu')}), {m.get('memory_mib')} MiB, "
               f"{m.get('postgres')}, {m.get('wrk')}, {m.get('pgbench')}.")
    out.append("Figures: median (min-max).")
    if r.get("incomplete"):
        out.append(f"INCOMPLETE: {r['incomplete']}; later sections are missing.")
    spr = r.get("statements_per_request")
    if spr:
        out.append("")
        out.append("Statements per request (pg_stat_statements): " + ", ".join(
            f"{k}: posd {v['posd']:.2f}, pgbench {v['pgbench']:.2f}" for k, v in spr.items()))
    for kind, title in (("reads", "Reads: GET /products/{id}"),
                        ("orders", "Orders: POST /orders (3 lines, card)"),
                        ("refunds", "Refunds: POST /orders/{id}/refunds (an amount)"),
                        ("offline", "Offline batches: POST /offline-bills (5 bills of 3 lines)")):
        if kind not in r:
            continue
        out += ["", f"### {title}", "",
                "| tier | posd req/s | pgbench TPS, same SQL | posd ÷ pgbench | posd p50 ms | posd p99 ms | errors |",
                "|---|---|---|---|---|---|---|"]
        for tier, x in r[kind].items():
            out.append(f"| {tier} | {f(x['posd_rps'])} | {f(x['pgbench_tps'])} | "
                       f"{f(x['ratio'], fmt='{:.2f}')} | {f(x['p50_us'], 1e-3, '{:.2f}')} | "
                       f"{f(x['p99_us'], 1e-3, '{:.2f}')} | {x['errors']} |")
        ext = {t: x["pgbench_extended_tps"] for t, x in r[kind].items() if "pgbench_extended_tps" in x}
        if ext:
            out += ["", "pgbench with the same scripts and no prepared statement (`-M extended`, one run), TPS: "
                    + ", ".join(f"{t} {f(v)}" for t, v in ext.items()) + "."]
    if "routing" in r:
        out += ["", "### Routing overhead: shared-tier read vs control route (no tenancy)", "",
                "| connections | posd req/s | control req/s | posd mean µs | control mean µs | overhead % | overhead µs/request |",
                "|---|---|---|---|---|---|---|"]
        for c, x in r["routing"].items():
            out.append(f"| {c} | {f(x['posd_rps'])} | {f(x['control_rps'])} | "
                       f"{f(x['posd_mean_us'])} | {f(x['control_mean_us'])} | "
                       f"{f(x['overhead_pct'], fmt='{:.1f}')} | {f(x['overhead_us'])} |")
    if "growth" in r:
        out += ["", "### Cost growth: requests spread over N tenants of one tier", "",
                "| tier | N | req/s | p50 ms | p99 ms | errors / requests | first request ms, median (min-max) | first request p99 ms | posd RSS MiB after | peak server conns (tenant DBs) |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for x in r["growth"]:
            out.append(
                f"| {x['tier']} | {x['tenants']} | {f(x['rps'])} | {f(x['p50_us'], 1e-3, '{:.2f}')} | "
                f"{f(x['p99_us'], 1e-3, '{:.2f}')} | {x['errors']} / {x['requests']} | "
                f"{f(x['first_request_us'], 1e-3, '{:.1f}')} | {x['first_request_p99_us'] / 1000:.1f} | "
                f"{x['rss_after_load_kib'] / 1024:.1f} | {x['peak_server_connections']} "
                f"({x['peak_tenant_db_connections']}) |")
        ded = [x for x in r["growth"] if x["tier"] == "dedicated"]
        if ded:
            x = ded[-1]
            p1, p2 = x["pools_after_first"], x["pools_after_load"]
            out += ["", f"### Fleet: {x['tenants']} dedicated merchants, max_connections = 100", ""]
            err = x["errors"] / max(1, x["requests"])
            out.append(f"- error rate: {x['errors']} / {x['requests']} ({100 * err:.3f} %)")
            out.append(f"- peak server connections: {x['peak_server_connections']} of max_connections 100 "
                       f"(on tenant databases: {x['peak_tenant_db_connections']}; "
                       f"POSD_CONNECTION_BUDGET {x['connection_budget']}, global pool 10)")
            out.append(f"- latency under load: p50 {f(x['p50_us'], 1e-3, '{:.2f}')} ms, "
                       f"p99 {f(x['p99_us'], 1e-3, '{:.2f}')} ms; {f(x['rps'])} req/s")
            out.append(f"- time to first byte, cold pool (each merchant's first request, one at a time): "
                       f"median {x['first_request_us']['median'] / 1000:.1f} ms, "
                       f"p99 {x['first_request_p99_us'] / 1000:.1f} ms, max {x['first_request_us']['max'] / 1000:.1f} ms")
            out.append(f"- posd RSS: {x['rss_boot_kib'] / 1024:.1f} MiB at boot, "
                       f"{x['rss_before_kib'] / 1024:.1f} MiB before the dedicated tier, "
                       f"{x['rss_after_first_kib'] / 1024:.1f} MiB after one request per merchant, "
                       f"{x['rss_after_load_kib'] / 1024:.1f} MiB after the load")
            out.append(f"- pools after one request per merchant: {p1.get('livePools')} live, "
                       f"{p1.get('builds')} built, {p1.get('evictions')} evicted, budget used "
                       f"{p1.get('budgetUsed')}/{p1.get('budgetLimit')}; after the load: "
                       f"{p2.get('livePools')} live, {p2.get('builds')} built, {p2.get('evictions')} evicted")
            if "rss_per_cached_pool_kib" in x:
                out.append(f"- RSS growth per cached tenant pool (with its connection), over the first "
                           f"{x['cached_pools_measured']} merchants, before any eviction: "
                           f"{x['rss_per_cached_pool_kib']:.1f} KiB")
            if "rss_per_live_pool_kib" in x:
                out.append(f"- RSS growth per live tenant pool after one request per merchant "
                           f"(an upper bound: it includes what the allocator kept from evicted pools): "
                           f"{x['rss_per_live_pool_kib']:.1f} KiB; per pool built over the whole run "
                           f"(leak check): {x['rss_per_pool_built_kib']:.2f} KiB")
    if "creation" in r:
        out += ["", "### Tenant creation (control-plane rows in bulk, then the provisioning API, 4 at a time)", "",
                "| tier | tenants | rows s | provisioning s | first product s | per tenant ms | 503s while adding products (retried) | left without product |",
                "|---|---|---|---|---|---|---|---|"]
        for tier, steps in r["creation"].items():
            for c in steps:
                n = c["to"] - c["from"]
                total = c["rows_s"] + c["provision_s"] + c["products_s"]
                out.append(f"| {tier} | {c['from']}→{c['to']} | {c['rows_s']} | {c['provision_s']} | "
                           f"{c['products_s']} | {1000 * total / max(1, n):.0f} | "
                           f"{c.get('product_503s', 0)} | {c.get('without_product', 0)} |")
    if "moves" in r:
        out += render_moves(r["moves"])
    if r.get("noisy", {}).get("settings"):
        out += render_noisy(r["noisy"])
    if r.get("propagation"):
        out += ["", "### Propagation: a change through instance A, first seen by instance B "
                "(ms from A's answer)", "",
                "| change | n | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|"]
        for name, x in r["propagation"].items():
            out.append(f"| {name} | {x['n']} | {x['p50_ms']:.1f} | {x['p99_ms']:.1f} | {x['max_ms']:.1f} |")
    return "\n".join(out) + "\n"


def render_noisy(x):
    ms = (1e-3, "{:.2f}")
    out = ["", f"### Noisy neighbours: {x['quiet_merchants']} quiet shared-tier merchants "
           f"({x['quiet_conns']} connections, {x['quiet_route']}) alone and while one more floods "
           f"posd ({x['flood_conns']} connections, {x['flood_route']}); global pool "
           f"{x['pool_size']}; phases of {x['quiet_s']} s (alone) and {x['flood_s']} s (flood)", "",
           "| POSD_MERCHANT_POOL_SHARE | quiet p99 ms alone | quiet p99 ms under flood | p99 factor "
           "(flood ÷ alone) | quiet p50 ms alone | quiet p50 ms under flood | quiet req/s alone | "
           "quiet req/s under flood | quiet errors / requests | flood req/s | flood 503s / requests | "
           "flood other errors | noisy flag after the flood phases |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in x["settings"]:
        a, u, fl, nv = s["quiet_alone"], s["quiet_flood"], s["flood"], s["noisy"]
        seen = "".join("y" if v else "n" for v in s.get("noisy_seen", []))
        flag = (f"set, share {nv['share']:.2f} ({seen})" if nv.get("present") else f"absent ({seen})")
        out.append(f"| {s['share']} ({s['label']}) | {f(a['p99_us'], *ms)} | {f(u['p99_us'], *ms)} | "
                   f"{f(s['p99_factor'], fmt='{:.1f}')} | {f(a['p50_us'], *ms)} | {f(u['p50_us'], *ms)} | "
                   f"{f(a['rps'])} | {f(u['rps'])} | {s['quiet_errors']} / {s['quiet_requests']} | "
                   f"{f(fl['rps'])} | {fl['s503']} / {fl['requests']} | {fl['other_errors']} | {flag} |")
    out.append("")
    out.append("Noisy flag: y/n after each flood phase, in order; the last reading:")
    for s in x["settings"]:
        nv = s["noisy"]
        if nv.get("present"):
            rec = nv.get("recommendation") or {}
            out.append(f"- {s['label']}: at {nv['uptime_s']} s of uptime, share {nv['share']:.2f}, pool busy "
                       f"{nv['pool_busy']:.2f}, others waited {nv['others_wait_ms']:.0f} ms, top routes "
                       f"{', '.join(nv.get('top_routes') or [])}; recommended tier {rec.get('tier')}: "
                       f"{rec.get('reason')}; metric `{nv.get('metric')}`")
        else:
            out.append(f"- {s['label']}: no flag at {nv['uptime_s']} s of uptime (metric: {nv.get('metric')})")
    return out


PHASES = ("prepare", "capture", "copy", "catch_up", "verify", "fence", "retire")


def n(x, fmt="{:.0f}"):
    return "n/a" if x is None else fmt.format(x)


def render_moves(mv):
    out = []
    lg = mv.get("large")
    if lg:
        rows = sum(lg["rows"].values())
        out += ["", f"### Tier moves: a merchant of {lg['orders']:,} orders ({rows:,} rows) moved while "
                f"{lg['clients']} clients order for it and {lg['unrelated_clients']} for an unrelated "
                "shared-tier merchant", "",
                f"Generated with SQL in {lg['generate_s']} s (VACUUM ANALYZE {lg['vacuum_s']} s); rows: "
                + ", ".join(f"{t} {c:,}" for t, c in lg["rows"].items() if c) + ".", "",
                "| direction | status | to the flip s | with retire s | raw COPY idle s | raw COPY under load s "
                "| move ÷ raw (load) | move ÷ raw (idle) | copy phase ÷ raw (load) | fence ms | rounds | rows: raw COPY, "
                "move's snapshot, at verify |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for d in lg["directions"]:
            m = d.get("move")
            if not m:
                continue
            flip = m.get("to_flip_s")
            copy = m["phase_ms"].get("copy")
            snap = sum(t.get("total", 0) for t in (m.get("copied") or []))
            verified = sum(t.get("total", 0) for t in (m.get("tables") or []))
            raw = sum(d["raw_idle_rows"].values())
            out.append(
                f"| {d['from']} → {d['to']} | {m['status']} | {n(flip, '{:.1f}')} | {n(m.get('total_s'), '{:.1f}')} | "
                f"{d['raw_idle_s']:.1f} | {d['raw_load_s']:.1f} | "
                f"{n(flip and flip / d['raw_load_s'], '{:.2f}')} | {n(flip and flip / d['raw_idle_s'], '{:.2f}')} | "
                f"{n(copy and copy / 1000 / d['raw_load_s'], '{:.2f}')} | {n(m['fence_ms'])} | {m['rounds']} | "
                f"{raw:,}, {snap:,}, {verified:,} |")
        out += ["", "Time per phase, s (phaseMs; fence: the phase up to the flip, from flippedAt):", "",
                "| direction | " + " | ".join(PHASES) + " |", "|---|" + "---|" * len(PHASES)]
        for d in lg["directions"]:
            m = d.get("move")
            if not m:
                continue
            ph = dict(m["phase_ms"], fence=m.get("fence_phase_ms"))
            out.append(f"| {d['from']} → {d['to']} | "
                       + " | ".join(n(ph.get(p) and ph[p] / 1000, "{:.1f}") for p in PHASES) + " |")
        out += ["", "Where the move's connections were, per phase: pg_stat_activity sampled every 0.5 s "
                "(samples, wait event or CPU, statement):", ""]
        for d in lg["directions"]:
            m = d.get("move")
            for ph in PHASES:
                top = (m or {}).get("activity", {}).get(ph)
                if top:
                    out.append(f"- {d['from']} → {d['to']}, {ph}: " + "; ".join(
                        f"{c} × `{k[:110]}`" for c, k in top[:3]))
        out += ["", "Orders/s answered 201, before the move (window) and during it (start to done), "
                "and what the clients saw during the whole run of each direction:", "",
                "| direction | merchant | before | during | during ÷ before | to the flip | after | "
                "503 + Retry-After (retried) | other errors | longest order ms (with retries) |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for d in lg["directions"]:
            if "during" not in d:
                continue
            for who in ("moving", "unrelated"):
                b, du, w = d["before"][who], d["during"][who], d["whole"][who]
                tf = d.get("to_flip", {}).get(who, {})
                ratio = du["rate"] / b["rate"] if b["rate"] and du["rate"] is not None else None
                out.append(f"| {d['from']} → {d['to']} | {who} | {n(b['rate'])} | {n(du['rate'])} | "
                           f"{n(ratio, '{:.2f}')} | {n(tf.get('rate'))} | {n(d['after'][who]['rate'])} | "
                           f"{w['retried_503']} | {w['errors']} | {n(du['longest_ms'])} |")
        for d in lg["directions"]:
            for who in ("moving", "unrelated"):
                kinds = d.get("whole", {}).get(who, {}).get("error_kinds")
                if kinds:
                    out.append(f"- errors, {d['from']} → {d['to']}, {who}: "
                               + "; ".join(f"{c} × {k}" for k, c in kinds.items()))
            m = d.get("move")
            if m and m.get("timed_out"):
                t = m["timed_out"]
                out.append(f"- the move {d['from']} → {d['to']} was still in phase {t['phase']} after "
                           f"{t['after_s']} s (rounds {t['rounds']}, backlog {t['backlog']}); the suite "
                           f"cancelled it (answer {t.get('cancel')})")
            if m and m["status"] != "done":
                out.append(f"- the move {d['from']} → {d['to']} ended {m['status']} in phase {m['phase']}: "
                           f"{m.get('error_code')} {m.get('error')}")
    fe = mv.get("fence")
    if fe:
        out += ["", f"### Tier moves: the fence over {len(fe['moves'])} moves of a small merchant "
                f"({fe['seed_orders']} orders to start with; {fe['clients']} clients, each pausing "
                f"{fe['pause_s']} s between orders)", "",
                f"fenceMs: p50 {n(fe['p50_ms'])}, p99 {n(fe['p99_ms'])}, max {n(fe['max_ms'])} "
                f"(nearest rank: with 10 moves p99 is the largest). Orders at the end: {fe['orders_after']:,}; "
                f"{fe['whole']['orders']} placed during the moves, {fe['whole']['retried_503']} answers 503 "
                f"with Retry-After (retried), {fe['whole']['errors']} other errors.", "",
                "| move | status | fence ms | fence phase ms | to the flip s | with retire s | rounds | "
                "503 retried | errors | longest order ms |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for x in fe["moves"]:
            c = x["clients"]
            out.append(f"| {x['from']} → {x['to']} | {x['status']} | {n(x['fence_ms'])} | "
                       f"{n(x.get('fence_phase_ms'))} | {n(x.get('to_flip_s'), '{:.2f}')} | "
                       f"{n(x.get('total_s'), '{:.2f}')} | {x['rounds']} | {c['retried_503']} | "
                       f"{c['errors']} | {n(c['longest_ms'])} |")
        kinds = fe["whole"].get("error_kinds")
        if kinds:
            out.append("- errors: " + "; ".join(f"{c} × {k}" for k, c in kinds.items()))
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        print(render(json.load(fh)))
