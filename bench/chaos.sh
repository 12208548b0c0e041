#!/usr/bin/env bash
# Chaos suite: builds the release binary, then for each cloud runs every scenario RUNS times in
# network-namespace labs with the simulated cloud (root needed), writes docs/chaos.md (a short
# introduction, one Markdown table per cloud, the settings and the date) and prints it.
#
#   sudo bench/chaos.sh                                      # Exoscale, 10 runs per scenario
#   sudo RUNS=1 bench/chaos.sh                               # a quick look
#   sudo CLOUDS="exoscale openstack:vip azure:lb-probe" SCENARIOS="kill,partition" bench/chaos.sh
#
# CLOUDS: exoscale, openstack:floating-ip, openstack:vip, azure:public-ip, azure:secondary-ip,
# azure:lb-probe (space separated; default exoscale). SCENARIOS: comma or space separated, or "all"
# (default; `exoip lab chaos --help` lists them). INTERVAL and RATIO: the agents' -t and -r
# (default 1 and 3, their defaults). RECONCILE: their --reconcile-interval (default: theirs,
# 30 s). SCALE: factor for every fault's duration (default 1). OUT: where the report goes
# (default docs/chaos.md). PARALLEL=1: run the clouds at the same time, each in its own labs
# (the agents are mostly idle, so six clouds fit on two cores; the report says so).
#
# At the defaults one run of every scenario takes about 7 minutes (the 75 s link cut and the
# 60 s of heartbeat loss are the longest), so the default 10 runs take a bit over an hour per
# cloud (PARALLEL=1: about that for all of them). The exit status is 1 when a pass criterion
# failed somewhere; the report is written anyway.
set -euo pipefail

RUNS="${RUNS:-10}"
SCENARIOS="${SCENARIOS:-all}"
SCENARIOS="${SCENARIOS// /,}"
INTERVAL="${INTERVAL:-1}"
RATIO="${RATIO:-3}"
RECONCILE="${RECONCILE:-}"
SCALE="${SCALE:-1}"
PARALLEL="${PARALLEL:-0}"
read -r -a CLOUD_LIST <<<"${CLOUDS:-exoscale}"

cd "$(dirname "$0")/.."
OUT="${OUT:-docs/chaos.md}"
if [ "$(id -u)" -ne 0 ]; then
    echo "bench/chaos.sh needs root (network namespaces)" >&2
    exit 1
fi
case "$RUNS" in '' | *[!0-9]* | 0) echo "RUNS must be a positive integer" >&2; exit 2 ;; esac

cargo build --release --quiet
# The commit the binary is built from (the checkout may move on while the suite runs).
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# Where cargo put it: ./target unless CARGO_TARGET_DIR says otherwise.
EXOIP="${CARGO_TARGET_DIR:-$PWD/target}/release/exoip"
case "$EXOIP" in /*) ;; *) EXOIP="$PWD/$EXOIP" ;; esac

extra=()
if [ -n "$RECONCILE" ]; then
    extra+=(--reconcile-interval "$RECONCILE")
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0

for cloud in "${CLOUD_LIST[@]}"; do
    case "$cloud" in
        exoscale | openstack:floating-ip | openstack:vip | azure:public-ip | azure:secondary-ip | azure:lb-probe) ;;
        *) echo "unknown cloud '$cloud' (exoscale, openstack:floating-ip, openstack:vip, azure:public-ip, azure:secondary-ip, azure:lb-probe)" >&2; exit 2 ;;
    esac
done

# One cloud's table into $work/<n>.md; its exit status into $work/<n>.failed when not 0.
run_cloud() {
    local n="$1" cloud="$2" provider="${2%%:*}" mode_args=()
    case "$cloud" in
        openstack:*) mode_args=(--openstack-mode "${cloud#*:}") ;;
        azure:*) mode_args=(--azure-mode "${cloud#*:}") ;;
    esac
    echo "running: $cloud, scenarios $SCENARIOS, $RUNS runs each" >&2
    printf '\n## %s\n\n' "$cloud" >"$work/$n.md"
    # Every lab step is bounded inside exoip; this is the backstop for the whole cloud.
    timeout --signal=TERM --kill-after=10 $((RUNS * 1200 + 600)) \
        "$EXOIP" lab chaos --markdown --runs "$RUNS" --scenario "$SCENARIOS" \
        --interval "$INTERVAL" --dead-ratio "$RATIO" --scale "$SCALE" "${extra[@]}" \
        --provider "$provider" "${mode_args[@]}" >>"$work/$n.md" || touch "$work/$n.failed"
}

n=0
for cloud in "${CLOUD_LIST[@]}"; do
    n=$((n + 1))
    if [ "$PARALLEL" = 1 ]; then
        run_cloud "$n" "$cloud" &
    else
        run_cloud "$n" "$cloud"
    fi
done
wait
tables="$work/tables.md"
: >"$tables"
for i in $(seq 1 "$n"); do
    cat "$work/$i.md" >>"$tables"
    if [ -e "$work/$i.failed" ]; then status=1; fi
done

mkdir -p "$(dirname "$OUT")"
{
    cat <<'EOF'
# Chaos suite

`sudo bench/chaos.sh` (this file is its output; `exoip lab chaos --help` runs single scenarios).
Every scenario runs in a fresh lab: three hosts in network namespaces (priorities 10, 20, 30), the
simulated cloud in a router namespace, a client fetching through the address every 50 ms. Each run
waits for the lab to settle (one holder, the alias there only, the agents agreeing), injects one fault
into the current holder H at a random point of the heartbeat cycle, ends it, and waits for the lab to
settle again. Faults: nftables rules inside the namespaces (no `tc netem` on these kernels), signals to
the agents, the host's cable on the router's bridge, and the simulator's fault injection.

| scenario | fault |
|---|---|
| kill | kill -9 of H's agent and H's cable cut (a crashed VM); once another host holds, H back without the alias and its agent restarted |
| sigstop | H's agent stopped (SIGSTOP) for 10 s, then SIGCONT (a stalled VM) |
| link-cut-5s, link-cut-75s | H's cable cut for 5 s, 75 s |
| partition | heartbeats (UDP 12345) dropped both ways between H and the others for 20 s; the API reachable for all |
| asymmetric | for 20 s the others do not hear H, H hears them |
| api-cut | H's TCP to the API dropped for 20 s; heartbeats flow |
| api-5xx, api-429 | every API request answers 503 (429 with Retry-After: 2) for 10 s from H's crash (as in kill) |
| api-latency | every API answer 10 s late for 25 s from H's crash (the agents' --api-timeout raised to 30 s) |
| api-outage | the API closes every connection unanswered for 20 s from H's crash |
| restart | H's agent killed (-9) and started again at once; the alias stays |
| simultaneous | every agent killed, the address detached and unaliased everywhere, every agent started at the same instant |
| loss | 30 % of the heartbeats arriving at any host dropped at random for 60 s |

Figures per run, from the simulator's holder timeline (OpenStack vip: who has the VIP on eth0; Azure
lb-probe: whom the load balancer sends to), where a host whose cable is cut holds nothing while it is
cut: the longest interval without a holder (not counting time the API was down: 5xx burst, 429 storm,
outage), the longest with several holders (counted from one dead period after the fault starts, when it
becomes observable), the ownership changes (a host that did not hold the address before now holds it),
and the client's longest wait for an answer through the address. (A floating IP or an Azure public IP
is on one port or NIC at a time: there, contention shows as ownership changes, never as several
holders.) Pass criteria per run: no-holder at
most the failover budget (dead period + API time: 1 s of allowance, the operation delay, Azure's 2 s
operation polls for its two PUTs; after an API that was down, plus the agent's longest backoff and 1 s,
or three Retry-Afters after a 429 storm; under latency, the latency once per API call of a claim: 4 on
Exoscale and OpenStack floating IPs, 7 on Azure; at a simultaneous start, 1 s more), multi-holder at most one reconcile period, at most one ownership change
away from H and one back (none under loss, one at a simultaneous start), and settled again afterwards.
Figures are "median / max" over the runs, in seconds; criteria "pass n/N" or "**FAIL** n/N" (runs
passing). A failed run prints its timeline and the logs' tails on stderr.
EOF
    cat "$tables"
    echo
    echo "Generated by \`bench/chaos.sh\` at commit $COMMIT on $(date -u '+%Y-%m-%d %H:%M UTC') ($(nproc) cores; RUNS=$RUNS, PARALLEL=$PARALLEL, SCENARIOS=$SCENARIOS, INTERVAL=$INTERVAL, RATIO=$RATIO, RECONCILE=${RECONCILE:-default}, SCALE=$SCALE)."
} >"$OUT"
cat "$OUT"
exit "$status"
