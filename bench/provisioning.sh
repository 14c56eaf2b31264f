#!/usr/bin/env bash
# Provisioning and tenant-migration figures, measured on the release binary
# over HTTP, against a private embedded PostgreSQL in a temporary directory.
#
#   bench/provisioning.sh                    # uses target/bench/release/posd
#   POSD_BIN=/path/to/posd bench/provisioning.sh
#
# bench/run passes the binary it built. Run alone without POSD_BIN, the
# script builds the benchmark binary (release, feature bench-control) as
# bench/run does, in target/bench ($CARGO_TARGET_DIR/bench when that is set):
# never where scripts/run finds the binary it serves.
#
# Knobs (environment): SCHEMA_N (provisionings per schema trial, 50),
# DEDICATED_N (per dedicated trial, 10), FLEET_N (schema tenants for the
# fleet runs, 1000), CONCURRENCY (fleet workers, 4), TRIALS (3), HTTP_PORT
# (18080).
# Prints each trial and, per figure, the median of the trials with min/max.
# Needs curl, psql and python3. Leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${POSD_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/bench"
  cargo build --release --locked --features bench-control --bin posd >&2
  POSD_BIN=$CARGO_TARGET_DIR/release/posd
fi
BIN=$POSD_BIN
SCHEMA_N=${SCHEMA_N:-50}
DEDICATED_N=${DEDICATED_N:-10}
FLEET_N=${FLEET_N:-1000}
CONCURRENCY=${CONCURRENCY:-4}
TRIALS=${TRIALS:-3}
HTTP_PORT=${HTTP_PORT:-18080}
[ -x "$BIN" ] || { echo "no $BIN: run bench/run, or unset POSD_BIN to build it" >&2; exit 1; }

DIR=$(mktemp -d /tmp/posd-bench.XXXXXX)
chmod 755 "$DIR"   # as root, the cluster runs as postgres and must reach its data
# POSD_BENCH_SUITE: a binary built with --features bench-control serves
# only with it set; only the benchmark suite sets it.
export POSD_DATA_DIR=$DIR/data ROCKET_PORT=$HTTP_PORT POSD_LOG=warn POSD_BENCH_SUITE=1
LOG=$DIR/serve.log
"$BIN" serve >"$LOG" 2>&1 &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT

API=http://127.0.0.1:$HTTP_PORT/api/v2/POS
for _ in $(seq 1 600); do
  curl -fs "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
curl -fs "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null || { echo "posd did not become ready" >&2; cat "$LOG" >&2; exit 1; }

secret() { sed -n "s/^$1=//p" "$POSD_DATA_DIR/secrets.env"; }
export PGPASSWORD; PGPASSWORD=$(secret OWNER_PASSWORD)
PSQL=(psql -qAtX -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(secret PORT)" -U posd_owner -d posd)
ADMIN=$("$BIN" admin-token --ttl 2h)

# Merchants straight into the control plane (creating them through the API
# hashes an owner password each time, which is not what is measured here).
new_merchants() { # prefix count -> ids on stdout
  "${PSQL[@]}" -c "INSERT INTO merchants (id, slug, name, timezone, currency, plan)
    SELECT gen_random_uuid(), '$1-' || i, 'Bench ' || i, 'UTC', 'USD', 'starter'
    FROM generate_series(1, $2) i RETURNING id"
}

provision() { # merchant tier -> seconds on stdout
  local out
  out=$(curl -sS -o "$DIR/body-$1" -w '%{http_code} %{time_total}' -X POST "$API/admin/tenant/provision" \
    -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d "{\"merchantId\":\"$1\",\"tier\":\"$2\"}")
  [ "${out%% *}" = 201 ] || { echo "provisioning $1 ($2): $out $(cat "$DIR/body-$1")" >&2; exit 1; }
  echo "${out#* }"
}

stats() { python3 -c '
import statistics, sys
v = sorted(float(x) for x in sys.stdin.read().split())
print(f"{statistics.median(v):.4f} {v[0]:.4f} {v[-1]:.4f}")'; }

summary=()
record() { # label unit values...
  local label=$1 unit=$2; shift 2
  read -r med lo hi < <(printf '%s\n' "$@" | stats)
  summary+=("$(printf '%-44s median %8.3f %s  (min %.3f, max %.3f; %d trials)' "$label" "$med" "$unit" "$lo" "$hi" $#)")
}

trial_p50() { # tier count prefix -> p50 ms of that many provisionings
  local ids times=()
  ids=$(new_merchants "$3" "$2")
  for id in $ids; do times+=("$(provision "$id" "$1")"); done
  printf '%s\n' "${times[@]}" | stats | awk '{printf "%.1f\n", $1 * 1000}'
}

echo "posd $("$BIN" --version | cut -d' ' -f2) on $(nproc) cores, $(psql --version | cut -d' ' -f3-)" >&2
schema=(); dedicated=()
for t in $(seq 1 "$TRIALS"); do
  schema+=("$(trial_p50 schema "$SCHEMA_N" "s$t")")
  echo "trial $t: schema provisioning p50 ${schema[-1]} ms over $SCHEMA_N" >&2
  dedicated+=("$(trial_p50 dedicated "$DEDICATED_N" "d$t")")
  echo "trial $t: dedicated provisioning p50 ${dedicated[-1]} ms over $DEDICATED_N" >&2
done
record "schema provisioning, p50 of $SCHEMA_N" ms "${schema[@]}"
record "dedicated provisioning, p50 of $DEDICATED_N" ms "${dedicated[@]}"

# The fleet: FLEET_N schema tenants in all (those above count).
# Setting up the fleet is not measured: four provisionings at a time.
have=$("${PSQL[@]}" -c "SELECT count(*) FROM merchants WHERE tier = 'schema'")
if [ "$have" -lt "$FLEET_N" ]; then
  export -f provision; export API ADMIN DIR
  new_merchants f $((FLEET_N - have)) | xargs -P 4 -n 1 bash -c 'provision "$0" schema >/dev/null'
fi
fleet() { # -> seconds of one posd tenants migrate --all
  local start end
  start=$(date +%s.%N)
  "$BIN" tenants migrate --all --concurrency "$CONCURRENCY" >"$DIR/fleet.out" 2>&1 \
    || { cat "$DIR/fleet.out" >&2; exit 1; }
  end=$(date +%s.%N)
  tail -1 "$DIR/fleet.out" >&2
  python3 -c "print(f'{$end - $start:.2f}')"
}
LATEST=$(ls -d tenant_migrations/*/ | sort | tail -1)
noop=(); real=()
for t in $(seq 1 "$TRIALS"); do
  noop+=("$(fleet)")
  echo "trial $t: no-op fleet run ${noop[-1]} s" >&2
  # Take every schema tenant back before its newest tenant migration (its
  # down.sql), so that the run applies one real migration to each; four
  # sessions at once, each taking a quarter of the schemas, without waiting
  # for each commit to be flushed (this setup is not measured).
  jobs=()
  for k in 0 1 2 3; do
    PGOPTIONS="-c synchronous_commit=off" "${PSQL[@]}" -c "DO \$bench\$ DECLARE s text; v text; BEGIN
      SELECT max(version) INTO v FROM tenant_shared.__diesel_schema_migrations;
      FOR s IN SELECT schema_name FROM merchants
                WHERE tier = 'schema' AND abs(hashtext(schema_name)) % 4 = $k LOOP
        PERFORM set_config('search_path', quote_ident(s), true);
        EXECUTE \$down\$$(cat "$LATEST/down.sql")\$down\$;
        EXECUTE format('DELETE FROM %I.__diesel_schema_migrations WHERE version = %L', s, v);
        COMMIT;  -- one tenant per transaction: a thousand DROPs exceed the lock table
      END LOOP;
    END \$bench\$" &
    jobs+=($!)
  done
  for j in "${jobs[@]}"; do wait "$j"; done
  "${PSQL[@]}" -c "UPDATE tenant_migration_state SET version = NULL"
  real+=("$(fleet)")
  echo "trial $t: one-migration fleet run ${real[-1]} s" >&2
done
n=$("${PSQL[@]}" -c "SELECT count(*) FROM merchants WHERE tier = 'schema'")
record "no-op migration run, $n schema tenants" s "${noop[@]}"
record "one-migration run, $n schema tenants, c=$CONCURRENCY" s "${real[@]}"
printf '%s\n' "${summary[@]}"
