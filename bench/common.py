"""What the driver (posdbench.py) and the sections (sections.py) both use."""

import statistics
import sys
import time

TIERS = ("shared", "schema", "dedicated")
SECTIONS = ("reads", "orders", "refunds", "offline", "routing", "growth", "moves", "noisy",
            "propagation")
# What runs without --only: every section but noisy and propagation (run
# them with --only).
DEFAULT_SECTIONS = ("reads", "orders", "routing", "growth", "moves")
PRODUCTS = 30  # per benchmark merchant; orders take 3 of them
PRICE = 250
# The password of every benchmark merchant's owner (bulk merchants get its hash).
OWNER_PASSWORD = "bench-password-1"


def log(msg):
    print(f"bench [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return self.end - time.monotonic()

    def check(self, what):
        if self.left() <= 0:
            raise TimeoutError(f"time budget exhausted during {what}")
