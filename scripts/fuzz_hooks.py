"""Schemathesis hooks for scripts/fuzz.

Generated ids are random UUIDs, so almost every case would answer 404. For
the parts of a case generated as valid data (positive mode), these hooks
put in ids of objects that exist: those scripts/fuzz created (listed in the
JSON file POSD_FUZZ_IDS), or, for operations that use an object up
(deleting, voiding, refunding, deprovisioning), a fresh one made just
before the call. A valid Idempotency-Key is made unique, and a valid login
gets the owner's real credentials. Parts generated as invalid data
(negative mode) are left as they are.

They also count the answers per operation and write the counts to
POSD_FUZZ_TALLY when schemathesis exits; scripts/fuzz prints the share of
2xx from them.

Environment: POSD_FUZZ_IDS (the ids file), POSD_FUZZ_AS (`staff` or
`admin`: the token this run sends; fresh objects are made only for the
operations that token may use), POSD_FUZZ_TALLY (where to write the counts).
"""

import atexit
import collections
import json
import os
import random
import threading
import time
import uuid

import requests
import schemathesis
from schemathesis.core.parameters import ParameterLocation

IDS = json.load(open(os.environ["POSD_FUZZ_IDS"]))
AS = os.environ["POSD_FUZZ_AS"]
TALLY = os.environ.get("POSD_FUZZ_TALLY")
API = IDS["api"]
PREFIX = "/api/v2/POS"

_session = requests.Session()
_lock = threading.Lock()
_counts = collections.defaultdict(collections.Counter)
_examples = {}
# Not the global generator: Hypothesis warns when strategies touch it.
_random = random.Random()


def _call(method, path, token, body=None, expect=(200, 201)):
    """A set-up request that must succeed; its JSON answer."""
    res = _session.request(
        method,
        API + path,
        json=body,
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    if res.status_code not in expect:
        raise RuntimeError(f"fuzz set-up: {method} {path}: {res.status_code} {res.text}")
    return res.json() if res.content else None


def _staff(method, path, body=None, expect=(200, 201)):
    return _call(method, path, IDS["staffToken"], body, expect)


def _admin(method, path, body=None, expect=(200, 201)):
    return _call(method, path, IDS["adminToken"], body, expect)


# Fresh objects, for operations that use one up.


def fresh_product(price=100):
    sku = f"FZ-{uuid.uuid4().hex[:12]}"
    body = {"sku": sku, "name": "Fuzz fresh", "priceMinor": price}
    return _staff("POST", "/products", body)["id"]


def fresh_category():
    return _staff("POST", "/categories", {"name": f"fuzz {uuid.uuid4().hex[:12]}"})["id"]


# A fresh order's lines: as many lines, of as many units, at as high a
# price as a till may sell, so that a refund of any size a till may give
# fits in it.
ORDER_LINES = 2
ORDER_QUANTITY = 100_000
ORDER_PRICE = 100_000


def a_fleet_run():
    """The id of a fleet run: a dry run, which changes nothing."""
    return _admin("POST", "/admin/tenants/migrate", {"dryRun": True})["run"]["id"]


def fresh_order():
    """An order paid in cash, of products of its own: something to refund
    or void whatever the other cases did to the catalog and the stock."""
    lines = [
        {"productId": fresh_product(ORDER_PRICE), "quantity": ORDER_QUANTITY}
        for _ in range(ORDER_LINES)
    ]
    total = ORDER_LINES * ORDER_QUANTITY * ORDER_PRICE
    body = {"lines": lines, "payments": [{"method": "cash", "amountMinor": total}]}
    return _staff("POST", "/orders", body)["id"]


def spare_on(tier):
    """The spare merchant, moved to the shared tier (provisioning needs a
    merchant there) or to a schema of its own (deprovisioning needs one)."""
    spare = IDS["spareMerchantId"]
    current = _admin("GET", f"/admin/tenants/{spare}")["tier"]
    if current != "shared" and tier == "shared":
        _admin("POST", f"/admin/tenants/{spare}/deprovision", {"force": True})
    elif current == "shared" and tier != "shared":
        _admin("POST", "/admin/tenant/provision", {"merchantId": spare, "tier": tier})
    return spare


# The largest payment the contract allows (pos::pricing::MAX_AMOUNT).
MAX_AMOUNT = 10_000_000_000_000


def _any(key):
    return _random.choice(IDS[key])


def moved():
    """The merchant moved once in set-up, and that move (finished: it
    can be read, and cancelling it is refused)."""
    return {"id": IDS["moverId"], "run": IDS["moveRunId"]}


def fresh_override():
    """The spare merchant with an override of the fuzz flag, to delete."""
    spare, key = IDS["spareMerchantId"], IDS["flagKey"]
    _admin("PUT", f"/admin/tenants/{spare}/flags/{key}", {"enabled": True})
    return {"id": spare, "key": key}


def fresh_domain():
    """A domain of the spare merchant, registered just now (to verify or
    to remove)."""
    spare = IDS["spareMerchantId"]
    domain = f"fz-{uuid.uuid4().hex[:12]}.example.org"
    _admin("POST", f"/admin/tenants/{spare}/domains", {"domain": domain})
    return {"id": spare, "domain": domain}


def fresh_integration(run):
    """An integration to delete: the merchant's own (`staff`) or the
    platform's (`admin`) of the kind the set-up leaves free (one per
    kind), made unless generated cases made one already."""
    call, path = (_staff, "/integrations") if run == "staff" else (_admin, "/admin/integrations")
    for item in call("GET", path)["items"]:
        if item["kind"] == "shipping" and item["source"] == ("merchant" if run == "staff" else "platform"):
            return item["id"]
    body = {"kind": "shipping", "provider": "fuzz", "credentials": {"apiKey": "fuzz-shipping"}}
    return call("POST", path, body)["id"]


def a_job():
    """A job of the fuzz merchant, enqueued just now (to read or retry)."""
    merchant = IDS["merchantId"]
    return _admin("POST", f"/admin/tenants/{merchant}/jobs", {"kind": "expire_idempotency_keys"}, expect=(202,))["id"]


_export = {}
_export_lock = threading.Lock()


def an_export():
    """An export job of the fuzz merchant that is done (its file can be
    downloaded): made once, then waited for (the serving workers run it)."""
    with _export_lock:
        if "id" not in _export:
            merchant = IDS["merchantId"]
            job = _admin("POST", f"/admin/tenants/{merchant}/jobs", {"kind": "export"}, expect=(202,))
            deadline = time.monotonic() + 60
            while job["status"] != "done":
                if job["status"] == "dead" or time.monotonic() > deadline:
                    raise RuntimeError(f"fuzz set-up: the export job did not finish: {job}")
                time.sleep(0.05)
                job = _admin("GET", f"/admin/jobs/{job['id']}")
            _export["id"] = job["id"]
    return _export["id"]


# The kind of the integration each run's set-up made (PATCH cases change
# it, so it stays).
SETUP_KINDS = {"staff": "payment", "admin": "email"}
KINDS = ("payment", "email", "sms", "accounting", "shipping")


def free_kind(run, body):
    """Makes room for a generated integration (one per kind): a case of
    the set-up's kind takes another, and what an earlier case made of
    that kind goes."""
    if body.get("kind") == SETUP_KINDS[run]:
        body["kind"] = _random.choice([k for k in KINDS if k != SETUP_KINDS[run]])
    call, path = (_staff, "/integrations") if run == "staff" else (_admin, "/admin/integrations")
    source = "merchant" if run == "staff" else "platform"
    for item in call("GET", path)["items"]:
        if item["kind"] == body.get("kind") and item["source"] == source:
            call("DELETE", f"{path}/{item['id']}", expect=(204,))


# Path ids: (method, path) -> (run that may use it, `any` for both, how to
# get an id, or a dict of ids for a path that names several). A path key
# that is not a valid key does not reach the route at all (404 whatever
# the token), so those are filled in for both runs.
PATH_IDS = {
    ("GET", "/products/{id}"): ("staff", lambda: _any("productIds")),
    ("PATCH", "/products/{id}"): ("staff", lambda: IDS["patchProductId"]),
    ("DELETE", "/products/{id}"): ("staff", fresh_product),
    ("PATCH", "/categories/{id}"): ("staff", lambda: IDS["categoryId"]),
    ("DELETE", "/categories/{id}"): ("staff", fresh_category),
    ("GET", "/customers/{id}"): ("staff", lambda: IDS["customerId"]),
    ("PATCH", "/customers/{id}"): ("staff", lambda: IDS["customerId"]),
    ("GET", "/orders/{id}"): ("staff", lambda: IDS["orderId"]),
    ("POST", "/orders/{id}/refunds"): ("staff", fresh_order),
    ("POST", "/orders/{id}/void"): ("staff", fresh_order),
    ("GET", "/inventory/{product}/movements"): ("staff", lambda: _any("productIds")),
    ("PATCH", "/staff/{id}"): ("staff", lambda: IDS["managerId"]),
    ("GET", "/admin/tenants/{id}"): ("admin", lambda: IDS["merchantId"]),
    ("GET", "/admin/fleet-runs/{id}"): ("admin", a_fleet_run),
    ("GET", "/admin/tenants/{id}/export"): ("admin", lambda: IDS["merchantId"]),
    ("GET", "/admin/tenants/{id}/usage"): ("admin", lambda: IDS["merchantId"]),
    ("POST", "/admin/tenants/{id}/suspend"): ("admin", lambda: IDS["merchantId"]),
    ("POST", "/admin/tenants/{id}/resume"): ("admin", lambda: IDS["merchantId"]),
    ("POST", "/admin/tenants/{id}/deprovision"): ("admin", lambda: spare_on("schema")),
    ("PATCH", "/admin/plans/{key}"): ("any", lambda: {"key": _any("planKeys")}),
    ("PATCH", "/admin/flags/{key}"): ("any", lambda: {"key": IDS["flagKey"]}),
    ("GET", "/admin/tenants/{id}/plan"): ("admin", lambda: IDS["spareMerchantId"]),
    ("POST", "/admin/tenants/{id}/plan"): ("admin", lambda: IDS["spareMerchantId"]),
    ("PUT", "/admin/tenants/{id}/flags/{key}"): (
        "any",
        lambda: {"id": IDS["spareMerchantId"], "key": IDS["flagKey"]},
    ),
    ("DELETE", "/admin/tenants/{id}/flags/{key}"): ("any", fresh_override),
    ("GET", "/admin/tenants/{id}/domains"): ("admin", lambda: IDS["spareMerchantId"]),
    ("POST", "/admin/tenants/{id}/domains"): ("admin", lambda: IDS["spareMerchantId"]),
    ("POST", "/admin/tenants/{id}/domains/{domain}/verify"): ("any", fresh_domain),
    ("DELETE", "/admin/tenants/{id}/domains/{domain}"): ("any", fresh_domain),
    ("PATCH", "/integrations/{id}"): ("staff", lambda: IDS["integrationId"]),
    ("DELETE", "/integrations/{id}"): ("staff", lambda: fresh_integration("staff")),
    ("PATCH", "/admin/integrations/{id}"): ("admin", lambda: IDS["defaultIntegrationId"]),
    ("DELETE", "/admin/integrations/{id}"): ("admin", lambda: fresh_integration("admin")),
    ("GET", "/admin/tenants/{id}/moves/{run}"): ("admin", moved),
    ("GET", "/admin/jobs/{id}"): ("admin", a_job),
    ("POST", "/admin/jobs/{id}/retry"): ("admin", a_job),
    ("GET", "/admin/jobs/{id}/file"): ("admin", an_export),
    ("POST", "/admin/servers/{id}/drain"): ("admin", lambda: IDS["serverId"]),
    ("POST", "/admin/servers/{id}/activate"): ("admin", lambda: IDS["serverId"]),
    ("POST", "/admin/tenants/{id}/jobs"): ("admin", lambda: IDS["merchantId"]),
    ("GET", "/admin/tenants/{id}/summaries"): ("admin", lambda: IDS["merchantId"]),
    ("POST", "/admin/tenants/{id}/moves/{run}/cancel"): ("admin", moved),
}

TIMEZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Lord_Howe"]

# Query parameters that name an object.
QUERY_IDS = {
    "categoryId": lambda: IDS["categoryId"],
    "productId": lambda: _any("productIds"),
}


def _fill_body(value, ids):
    """Replaces, at any depth, the fields that name an object."""
    if isinstance(value, list):
        return [_fill_body(v, ids) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, v in value.items():
        if key in ids and v is not None:
            if isinstance(v, list):
                out[key] = [ids[key]() for _ in v]
            else:
                out[key] = ids[key]()
        else:
            out[key] = _fill_body(v, ids)
    return out


def _positive(case, location):
    meta = case.meta
    return meta is None or not meta.is_negative_at(location)


def _operation(case):
    """`METHOD /path` under the prefix, or None for a probe with a method
    the operation does not have."""
    method = case.operation.method.upper()
    if case.method.upper() != method:
        return None
    return method, case.operation.path.removeprefix(PREFIX)


ARCHIVE_MAGIC = b"posd-export 1\n"


@schemathesis.deserializer("application/octet-stream")
def _archive(ctx, response):
    """An export archive (the only binary answer): its first line and its
    JSON manifest are checked here; the whole archive is then a string of
    bytes, which is what the schema says."""
    content = response.content
    if not content.startswith(ARCHIVE_MAGIC):
        raise ValueError(f"not a posd archive: starts {content[:20]!r}")
    manifest, newline, _ = content[len(ARCHIVE_MAGIC) :].partition(b"\n")
    if not newline or not isinstance(json.loads(manifest), dict):
        raise ValueError("the archive's manifest is not a JSON object on one line")
    return content.decode("latin-1")


@schemathesis.hook
def before_call(context, case, kwargs):
    op = _operation(case)
    if op is None:
        return
    method, path = op

    # Only for the token that may use the operation: the other one answers
    # 401 whatever the id.
    run, make = PATH_IDS.get(op, (None, None))
    if run in (AS, "any") and case.path_parameters and _positive(case, ParameterLocation.PATH):
        made = make()
        if not isinstance(made, dict):
            made = {"product" if "{product}" in path else "id": made}
        for name, value in made.items():
            if name in case.path_parameters:
                case.path_parameters[name] = value

    if case.query and _positive(case, ParameterLocation.QUERY):
        for key, make in QUERY_IDS.items():
            if case.query.get(key) is not None:
                case.query[key] = make()

    if case.headers and _positive(case, ParameterLocation.HEADER):
        for key in list(case.headers):
            if key.lower() == "idempotency-key":
                case.headers[key] = str(uuid.uuid4())

    if case.body is None or not _positive(case, ParameterLocation.BODY):
        return
    if op == ("POST", "/auth/login") and isinstance(case.body, dict):
        case.body = dict(case.body, **IDS["login"])
        return
    if op == ("POST", "/admin/servers") and isinstance(case.body, dict):
        # A server that answers: the embedded cluster.
        case.body = dict(case.body, url=IDS["serverUrl"])
        return
    ids = {
        "productId": lambda: _any("saleProductIds"),
        "customerId": lambda: IDS["customerId"],
        "categoryId": lambda: IDS["categoryId"],
        "merchantId": lambda: IDS["merchantId"],
        "merchantIds": lambda: IDS["merchantId"],
        # A plan's key, in a merchant's or a plan change, or a flag's gate.
        "plan": lambda: _any("planKeys"),
        "minPlan": lambda: _any("planKeys"),
        # Not an id, but a name from a list the schema cannot hold.
        "timezone": lambda: _random.choice(TIMEZONES),
        # A database server that exists.
        "server": lambda: "default",
    }
    if op == ("POST", "/admin/tenant/provision") and AS == "admin" and isinstance(case.body, dict):
        # Only a merchant with no data on the shared tier can be provisioned.
        if case.body.get("tier") in ("schema", "dedicated"):
            ids["merchantId"] = lambda: spare_on("shared")
    if op == ("POST", "/orders/{id}/refunds"):
        ids["lineNo"] = lambda: _random.randint(1, ORDER_LINES)
    case.body = _fill_body(case.body, ids)
    run = {("POST", "/integrations"): "staff", ("POST", "/admin/integrations"): "admin"}.get(op)
    if run == AS and isinstance(case.body, dict):
        free_kind(run, case.body)
    if op == ("POST", "/orders") and isinstance(case.body, dict):
        # Random payments rarely cover random lines; cash covers any total
        # (the excess is change), so the order itself is what is tested.
        case.body["payments"] = [{"method": "cash", "amountMinor": MAX_AMOUNT}]


@schemathesis.hook
def after_call(context, case, response):
    op = _operation(case)
    if op is None:
        return
    positive = case.meta is None or not case.meta.generation.mode.is_negative
    code = message = ""
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            code, message = error["code"], error["message"]
        except (ValueError, KeyError, TypeError):
            code = "?"
    key = f"{op[0]} {case.operation.path}"
    answer = ("positive" if positive else "negative", response.status_code, code)
    with _lock:
        _counts[key][answer] += 1
        _examples.setdefault((key, answer), message)


@atexit.register
def _write_tally():
    if not TALLY:
        return
    rows = []
    with _lock:
        for op, counter in sorted(_counts.items()):
            for (mode, status, code), n in sorted(counter.items()):
                example = _examples.get((op, (mode, status, code)), "")
                rows.append(
                    {
                        "operation": op,
                        "mode": mode,
                        "status": status,
                        "code": code,
                        "count": n,
                        "example": example,
                    }
                )
    with open(TALLY, "w") as f:
        json.dump(rows, f)
