"""posd for the benchmark: `posd serve` on its embedded PostgreSQL, posd's
own commands (`migrate`, `admin-token`), and the connections the suite
makes to that PostgreSQL besides posd's (psql, pgbench).

Standard library only. Everything listens on 127.0.0.1; every wait is
bounded in time.
"""

import glob
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

HOST = "127.0.0.1"

# psql's field separator: a control character no SQL text here contains
# (captured statements contain `|`).
SEP = "\x1f"

# What the suite needs from PostgreSQL beyond posd's embedded defaults:
# pg_stat_statements for the capture, shared buffers that hold every
# benchmark merchant's tables, and no checkpoint forced by the WAL that a
# thousand CREATE DATABASE write. Written to the cluster's
# postgresql.auto.conf with the address, port, socket and max_connections
# that posd gives its cluster when it starts it.
PG_SETTINGS = {
    "shared_buffers": "512MB",
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.max": "1000",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "log_min_messages": "warning",
}

# The environment posd gives the server of its cluster (src/embedded/):
# glibc's malloc keeps freed memory rather than return it to the kernel
# after every transaction.
PG_ENV = {
    "MALLOC_TRIM_THRESHOLD_": "8388608",
    "MALLOC_TOP_PAD_": "1048576",
    "MALLOC_MMAP_THRESHOLD_": "4194304",
}

# The suite logs in every tenant's owner from 127.0.0.1: up to 3,000
# logins in a full run, which posd's default limit per address (100 at once,
# then 2 per second) would spread over half an hour.
LOGIN_ADDRESS_LIMIT = "100000/1ms"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pg_ctl():
    """pg_ctl from where posd finds the server it runs (src/embedded/):
    POSD_PG_BINDIR, else the newest Debian installation, else PATH."""
    if os.environ.get("POSD_PG_BINDIR"):
        return os.path.join(os.environ["POSD_PG_BINDIR"], "pg_ctl")
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    if found:
        return found[-1]
    return shutil.which("pg_ctl") or "pg_ctl"


def rss_kib(pid):
    """Resident set size of a process, in KiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class DataDir:
    """posd's data directory (`POSD_DATA_DIR`), with its embedded cluster.

    posd writes the cluster's generated credentials to `secrets.env` there
    (src/embedded/secrets.rs), the file README.md points operators to for a
    superuser psql. The suite reads it too: it needs the superuser for what
    posd has no command for (pg_stat_statements, pg_stat_activity, ANALYZE,
    the control route's role) and the app role's password for pgbench, which
    runs posd's SQL as the role posd's requests run as. The cluster listens
    on TCP only (no Unix socket), so both connect with a password.
    """

    ROLES = {"postgres": "SUPERUSER_PASSWORD", "posd_owner": "OWNER_PASSWORD",
             "posd_app": "APP_PASSWORD"}

    def __init__(self, path):
        self.path = path
        self.pgdata = os.path.join(path, "pgdata")
        self._secrets = None
        self.started = False

    def secrets(self):
        if self._secrets is None:
            with open(os.path.join(self.path, "secrets.env")) as f:
                self._secrets = dict(line.rstrip("\n").split("=", 1) for line in f
                                     if "=" in line and not line.startswith("#"))
        return self._secrets

    @property
    def port(self):
        return int(self.secrets()["PORT"])

    def password(self, user):
        return self.secrets()[self.ROLES[user]]

    def configure(self, settings):
        """Adds settings to the cluster's postgresql.auto.conf (the file
        ALTER SYSTEM writes), read when the cluster starts."""
        with open(os.path.join(self.pgdata, "postgresql.auto.conf"), "a") as f:
            for k, v in {"listen_addresses": HOST, "port": str(self.port),
                         "unix_socket_directories": "", "max_connections": "100",
                         **settings}.items():
                f.write(f"{k} = '{v}'\n")

    # posd stops its cluster when the `posd serve` that started it exits,
    # and a posd started while the cluster runs shares it (src/embedded/).
    # The suite restarts posd several times (cold caches and pools), and a
    # PostgreSQL stop each time would cost a shutdown checkpoint that grows
    # with the tenant databases (12 s with 11 of them here, 100 s with 101),
    # and restart PostgreSQL cold as well. So the suite keeps the cluster
    # running itself, for the whole run, with pg_ctl, and every posd shares
    # it. Everything else about the cluster (initdb, roles, database,
    # secrets) is posd's.

    def _pg_ctl(self, *args, timeout=120):
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(as_user + [pg_ctl(), "-D", self.pgdata, *args], check=True,
                       stdout=subprocess.DEVNULL, timeout=timeout,
                       env={**os.environ, **PG_ENV})

    def start(self):
        log = os.path.join(self.path, "postgres.log")
        if os.geteuid() == 0:
            # As root, posd runs the cluster as `postgres`; so does the suite.
            open(log, "a").close()
            shutil.chown(log, "postgres", "postgres")
        self._pg_ctl("-l", log, "-w", "-t", "60", "start", timeout=90)
        self.started = True

    def stop(self, keep=False):
        if self.started:
            # Unless kept, the cluster is deleted next: no shutdown checkpoint.
            self._pg_ctl("-m", "fast" if keep else "immediate", "-w", "-t", "60", "stop",
                         timeout=90)
            self.started = False

    def env(self, user="postgres"):
        e = dict(os.environ)
        e.update(PGHOST=HOST, PGPORT=str(self.port), PGUSER=user,
                 PGPASSWORD=self.password(user), PGCONNECT_TIMEOUT="5")
        return e

    def url(self, user, password, db):
        return f"postgres://{user}:{password}@{HOST}:{self.port}/{db}"

    def psql(self, sql, db="postgres", user="postgres", timeout=600):
        """Runs SQL (stdin) and returns the unaligned, tuples-only output."""
        r = subprocess.run(
            ["psql", "-X", "-q", "-At", "-F", SEP, "-v", "ON_ERROR_STOP=1", "-d", db],
            input=sql, capture_output=True, text=True, timeout=timeout, env=self.env(user),
        )
        if r.returncode != 0:
            raise RuntimeError(f"psql failed: {r.stderr.strip()[:2000]}")
        return r.stdout

    def rows(self, sql, db="postgres"):
        out = self.psql(sql, db=db)
        return [line.split(SEP) for line in out.splitlines() if line]

    def version(self):
        """As `postgres --version` prints it."""
        return "postgres (PostgreSQL) " + self.psql("SHOW server_version").strip()


def posd_env(data, extra=None):
    """The environment of a posd process on the embedded cluster in `data`.

    POSD_* variables of the caller's environment are left out (POSD_LOG and
    POSD_PG_BINDIR excepted): a POSD_DATABASE_URL there would take posd off
    the embedded cluster, and pool sizes are the suite's to set."""
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("POSD_") or k in ("POSD_LOG", "POSD_PG_BINDIR")}
    e.setdefault("POSD_LOG", "warn")
    e.update(
        POSD_DATA_DIR=data.path,
        POSD_LOGIN_ADDRESS_LIMIT=LOGIN_ADDRESS_LIMIT,
        # A binary built with --features bench-control serves only
        # with this set; only the benchmark suite sets it.
        POSD_BENCH_SUITE="1",
    )
    e.update(extra or {})
    return e


def command(binary, data, *args, timeout=300):
    """Runs one posd command (not `serve`) and returns its standard output."""
    r = subprocess.run([binary, *args], env=posd_env(data), capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"posd {' '.join(args)} failed: {r.stderr.strip()[-2000:]}")
    return r.stdout


class Posd:
    """One `posd serve` (release build) on a free port, sharing the embedded
    cluster in `data` that the suite keeps running."""

    def __init__(self, binary, data, logdir, env=None, name="posd"):
        self.binary = binary
        self.data = data
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.api = self.base + "/api/v2/POS"
        self.logpath = os.path.join(logdir, f"{name}-{self.port}.log")
        self.env = posd_env(data, {"ROCKET_ADDRESS": HOST, "ROCKET_PORT": str(self.port),
                                   "ROCKET_LOG_LEVEL": "off", **(env or {})})
        self.proc = None

    def start(self, timeout=120):
        self.logf = open(self.logpath, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "serve"], env=self.env, stdout=self.logf, stderr=self.logf,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"posd exited at start; see {self.logpath}")
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=2) as r:
                    if json.load(r).get("status") == "ready":
                        return self
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"posd was not ready within {timeout}s; see {self.logpath}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            # posd may wait out its shutdown grace (15 s) for idle
            # keep-alive connections; nothing is lost by not waiting here.
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc:
            self.logf.close()
        self.proc = None

    def rss_kib(self):
        return rss_kib(self.proc.pid) if self.proc else 0

    def admin_token(self):
        return command(self.binary, self.data, "admin-token", "--ttl", "6h",
                       "--subject", "bench", timeout=30).strip()

    def login(self, merchant, email, password):
        """A staff token, from `POST /auth/login`."""
        st, t = self.call("POST", "/auth/login", None,
                          {"merchant": merchant, "email": email, "password": password})
        if st != 200:
            raise RuntimeError(f"login to {merchant} as {email}: {st} {t}")
        return t["token"]

    def call(self, method, path, token=None, body=None, headers=None, timeout=120):
        """One request; returns (status, parsed JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api + path, data=data, method=method)
        if token:
            req.add_header("Authorization", "Bearer " + token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")
