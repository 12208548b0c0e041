#!/usr/bin/env bash
# Failover benchmark: builds the release binary, then for each cloud and heartbeat setting runs the
# kill, term and restart scenarios in a network-namespace lab (root needed) and prints one table.
#
#   sudo bench/failover.sh                                   # Exoscale, 10 runs per scenario
#   sudo RUNS=3 bench/failover.sh                            # quicker
#   sudo CLOUDS="openstack:floating-ip openstack:vip" SCENARIOS=kill bench/failover.sh
#
# CLOUDS: exoscale, openstack:floating-ip, openstack:vip, azure:public-ip, azure:secondary-ip,
# azure:lb-probe (space separated; default exoscale).
# SETTINGS: "interval ratio" pairs (default "1 3" and "0.1 3"). SCENARIOS: kill term restart.
# Every run also times "signal -> reachable again": a client fetching through the address every
# 20 ms until a survivor answers.
#
# Times are milliseconds from the signal to the simulator's timeline events or the client's
# answers (same clock). At -t 1 -r 3 a run takes about 10 s (detection, restart, hold-off,
# settling), so the default 10 runs x 3 scenarios take about 6 minutes per cloud there and under a
# minute at -t 0.1.
set -euo pipefail

RUNS="${RUNS:-10}"
OP_DELAY="${OP_DELAY:-0ms}"
read -r -a CLOUD_LIST <<<"${CLOUDS:-exoscale}"
read -r -a SCENARIO_LIST <<<"${SCENARIOS:-kill term restart}"
if [ -n "${SETTINGS:-}" ]; then
    IFS=',' read -r -a SETTING_LIST <<<"$SETTINGS"
else
    SETTING_LIST=("1 3" "0.1 3")
fi

cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "bench/failover.sh needs root (network namespaces)" >&2
    exit 1
fi
case "$RUNS" in '' | *[!0-9]* | 0) echo "RUNS must be a positive integer" >&2; exit 2 ;; esac

cargo build --release --quiet
EXOIP="$PWD/target/release/exoip"

results="$(mktemp)"
trap 'rm -f "$results"' EXIT

for cloud in "${CLOUD_LIST[@]}"; do
    provider="${cloud%%:*}"
    mode_args=()
    case "$cloud" in
        exoscale) ;;
        openstack:*) mode_args=(--openstack-mode "${cloud#*:}") ;;
        azure:*) mode_args=(--azure-mode "${cloud#*:}") ;;
        *) echo "unknown cloud '$cloud' (exoscale, openstack:floating-ip, openstack:vip, azure:public-ip, azure:secondary-ip, azure:lb-probe)" >&2; exit 2 ;;
    esac
    for setting in "${SETTING_LIST[@]}"; do
        read -r interval ratio <<<"$setting"
        for scenario in "${SCENARIO_LIST[@]}"; do
            echo "running: $cloud, -t $interval -r $ratio, $scenario, $RUNS runs" >&2
            # Each lab step is bounded inside exoip; this is the backstop for the whole scenario.
            timeout --signal=TERM --kill-after=10 $((RUNS * 60 + 120)) \
                "$EXOIP" lab bench --tsv --runs "$RUNS" --interval "$interval" \
                --dead-ratio "$ratio" --scenario "$scenario" --op-delay "$OP_DELAY" \
                --provider "$provider" "${mode_args[@]}" --data-path >>"$results"
        done
    done
done

echo
printf '%-16s %-9s %-36s %5s %8s %8s %8s\n' scenario "t x r" "metric" runs "min ms" "median" "max ms"
printf '%-16s %-9s %-36s %5s %8s %8s %8s\n' ---------------- --------- ------------------------------------ ----- -------- -------- --------
while IFS=$'\t' read -r scenario interval ratio _op metric runs min median max; do
    printf '%-16s %-9s %-36s %5s %8s %8s %8s\n' "$scenario" "${interval}s x $ratio" "$metric" "$runs" "$min" "$median" "$max"
done <"$results"
echo "(op delay $OP_DELAY; 'signal' is kill -9 + cable cut for kill, SIGTERM for term and restart)"
