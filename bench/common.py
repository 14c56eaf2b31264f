"""What the driver (posdbench.py) and the sections (sections.py) both use."""

import base64
import hashlib
import hmac
import json
import statistics
import sys
import time

TIERS = ("shared", "schema", "dedicated")
SECTIONS = ("reads", "orders", "routing", "growth")
PRODUCTS = 30  # per benchmark merchant; orders take 3 of them
PRICE = 250


def log(msg):
    print(f"bench [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def staff_token(secret, staff_id, merchant_id, ttl=6 * 3600):
    """An HS256 staff token, as `POST /auth/login` issues (same claims)."""
    now = int(time.time())
    header = b64url(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
    claims = b64url(json.dumps({
        "sub": str(staff_id), "mid": str(merchant_id), "role": "owner",
        "iss": "posd", "aud": "posd", "exp": now + ttl, "iat": now,
    }).encode())
    sig = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64url(sig)}"


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return self.end - time.monotonic()

    def check(self, what):
        if self.left() <= 0:
            raise TimeoutError(f"time budget exhausted during {what}")
