"""A throw-away PostgreSQL cluster and posd processes for the benchmark.

Standard library only. Everything listens on 127.0.0.1; every wait is
bounded in time.
"""

import base64
import glob
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pg_bindir():
    if os.environ.get("POSD_PG_BINDIR"):
        return os.environ["POSD_PG_BINDIR"]
    dirs = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0,
    )
    for d in reversed(dirs):
        if os.path.isfile(os.path.join(d, "initdb")):
            return d
    raise SystemExit("bench: PostgreSQL server binaries not found (bench/deps installs them)")


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


def pss_tree_kib(root_pid):
    """Proportional set size of a process and its children, in KiB."""
    total = 0
    pids = [root_pid]
    try:
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    with open(f"/proc/{p}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == root_pid:
                            pids.append(int(p))
                except (OSError, IndexError, ValueError):
                    pass
    except OSError:
        return 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


# psql's field separator: a control character no SQL text here contains
# (captured statements contain `|`).
SEP = "\x1f"


class Cluster:
    """initdb + pg_ctl in a temporary directory, on a free port."""

    def __init__(self, workdir, max_connections=100, log=print):
        self.bindir = pg_bindir()
        self.version = subprocess.run(
            [os.path.join(self.bindir, "postgres"), "--version"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        self.dir = tempfile.mkdtemp(prefix="posd-bench-pg-", dir=workdir)
        self.data = os.path.join(self.dir, "data")
        self.logfile = os.path.join(self.dir, "postgres.log")
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.max_connections = max_connections
        self.log = log
        self.as_user = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root.
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres", "postgres")
            os.chmod(self.dir, 0o755)
            os.chmod(workdir, 0o755)
        self.running = False

    def _run(self, args, **kw):
        return subprocess.run(self.as_user + args, check=True, **kw)

    def start(self):
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write(self.password)
        if self.as_user:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            [os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "postgres",
             "-A", "scram-sha-256", "-E", "UTF8", "--locale=C", f"--pwfile={pwfile}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
        )
        os.remove(pwfile)
        opts = {
            "listen_addresses": HOST,
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": str(self.max_connections),
            "shared_buffers": "512MB",
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.max": "1000",
            "max_wal_size": "8GB",
            "checkpoint_timeout": "30min",
            "log_min_messages": "warning",
        }
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as f:
            for k, v in opts.items():
                f.write(f"{k} = '{v}'\n")
        self._run(
            [os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.logfile,
             "-w", "-t", "60", "start"],
            stdout=subprocess.DEVNULL, timeout=90,
        )
        self.running = True
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.pid = int(f.readline())

    def stop(self, keep=False):
        if self.running:
            subprocess.run(
                # The cluster is deleted next: skip the shutdown checkpoint.
                self.as_user + [os.path.join(self.bindir, "pg_ctl"), "-D", self.data,
                                "-m", "fast" if keep else "immediate", "-w", "-t", "60", "stop"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=90,
            )
            self.running = False
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def env(self, user="postgres", password=None):
        e = dict(os.environ)
        e.update(PGHOST=HOST, PGPORT=str(self.port), PGUSER=user,
                 PGPASSWORD=password or self.password, PGCONNECT_TIMEOUT="5")
        return e

    def url(self, user, password, db):
        return f"postgres://{user}:{password}@{HOST}:{self.port}/{db}"

    def psql(self, sql, db="postgres", user="postgres", password=None, timeout=600):
        """Runs SQL (stdin) and returns the unaligned, tuples-only output."""
        r = subprocess.run(
            ["psql", "-X", "-q", "-At", "-F", SEP, "-v", "ON_ERROR_STOP=1", "-d", db],
            input=sql, capture_output=True, text=True, timeout=timeout,
            env=self.env(user, password),
        )
        if r.returncode != 0:
            raise RuntimeError(f"psql failed: {r.stderr.strip()[:2000]}")
        return r.stdout

    def rows(self, sql, db="postgres"):
        out = self.psql(sql, db=db)
        return [line.split(SEP) for line in out.splitlines() if line]


class Posd:
    """One posd process (release build) on a free port."""

    def __init__(self, binary, cluster, creds, logdir, env=None, name="posd"):
        self.binary = binary
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.api = self.base + "/api/v2/POS"
        self.logpath = os.path.join(logdir, f"{name}-{self.port}.log")
        e = dict(os.environ)
        e.update(creds)
        e.update(
            ROCKET_ADDRESS=HOST,
            ROCKET_PORT=str(self.port),
            ROCKET_LOG_LEVEL="off",
            POSD_LOG=os.environ.get("POSD_LOG", "warn"),
            # A binary built with --features bench-control serves only
            # with this set; only the benchmark suite sets it.
            POSD_BENCH_SUITE="1",
        )
        e.update(env or {})
        self.env = e
        self.proc = None

    def start(self, timeout=60):
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
        r = subprocess.run(
            [self.binary, "admin-token", "--ttl", "6h", "--subject", "bench"],
            env=self.env, capture_output=True, text=True, timeout=30, check=True,
        )
        return r.stdout.strip()

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


def encryption_key_spec():
    return "k1:" + base64.b64encode(secrets.token_bytes(32)).decode()
