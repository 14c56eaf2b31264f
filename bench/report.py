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
                        ("orders", "Orders: POST /orders (3 lines, card)")):
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
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        print(render(json.load(fh)))
