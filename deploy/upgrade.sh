#!/usr/bin/env bash
# Wave-by-wave Istio revision upgrade gated by meshgate.
#
#   deploy/upgrade.sh 1-24-2 1-25-0 "shop payments" "search ads" "everything-else"
#
# Installs the new istiod revision beside the old one, then for each wave (a quoted list of
# namespaces): relabels the namespaces to the new revision, restarts their workloads so the pods
# get the new sidecar, and asks meshgate whether the canary revision is at least as healthy as
# the baseline. GO: next wave. NO-GO: the wave is rolled back and the script stops.
# INCONCLUSIVE or meshgate unreachable: the script stops for a person to decide.
#
# Needs istioctl, kubectl and meshgate on PATH, and MESHGATE_SERVER (default http://127.0.0.1:9400,
# e.g. after `kubectl -n meshgate port-forward svc/meshgate 9400`). MESHGATE_PRE_MOVE (default
# 30m) is how long each wave's analysis watches the wave on the old revision before it moves.
set -euo pipefail

old="${1:?usage: upgrade.sh OLD_REVISION NEW_REVISION WAVE...}"
new="${2:?usage: upgrade.sh OLD_REVISION NEW_REVISION WAVE...}"
shift 2
[ "$#" -gt 0 ] || { echo "no waves given" >&2; exit 64; }
version="${new//-/.}"
server="${MESHGATE_SERVER:-http://127.0.0.1:9400}"
# How long each wave's analysis watches its namespaces on the old revision before the move
# (sleep syntax), and its maximum duration (pre-move window included).
pre_move="${MESHGATE_PRE_MOVE:-30m}"
max_duration="${MESHGATE_MAX_DURATION:-2h}"

echo "== installing istiod revision $new (istio $version) beside $old"
istioctl install -y --set revision="$new" --set tag="$version"
kubectl -n istio-system rollout status "deployment/istiod-$new" --timeout=5m

wave=0
for namespaces in "$@"; do
  wave=$((wave + 1))
  # Judged before/after: each workload of the wave after its move against itself before it,
  # adjusted by the rest of the mesh. So the analysis starts before the move and watches the
  # wave on $old for $pre_move first (docs/statistics.md, section 3b).
  echo "== wave $wave: $namespaces; watching them on $old for $pre_move before the move"
  meshgate gate --server "$server" --name "upgrade-$new-wave-$wave" \
    --baseline "{role=\"proxy\", revision=\"$old\"}" \
    --canary "{role=\"proxy\", revision=\"$new\"}" \
    --design before-after --moving "${namespaces// /,}" \
    --min-duration 10m --max-duration "$max_duration" --json > "meshgate-wave-$wave.json" &
  gate_pid=$!
  sleep "$pre_move"
  if ! kill -0 "$gate_pid" 2>/dev/null; then
    # Decided before anything moved (a skew NO-GO, a refused request): nothing to roll back.
    set +e; wait "$gate_pid"; code=$?; set -e
    echo "== wave $wave: meshgate answered before the move (exit $code, meshgate-wave-$wave.json); nothing moved, stopping" >&2
    exit 3
  fi
  echo "== wave $wave: $namespaces -> $new"
  for ns in $namespaces; do
    kubectl label namespace "$ns" istio-injection- "istio.io/rev=$new" --overwrite
    kubectl -n "$ns" rollout restart deployment
  done
  for ns in $namespaces; do
    kubectl -n "$ns" rollout status deployment --timeout=10m
  done

  set +e
  wait "$gate_pid"
  code=$?
  set -e
  case "$code" in
    0) echo "== wave $wave: GO (evidence in meshgate-wave-$wave.json)" ;;
    1)
      echo "== wave $wave: NO-GO, rolling the wave back to $old" >&2
      for ns in $namespaces; do
        kubectl label namespace "$ns" "istio.io/rev=$old" --overwrite
        kubectl -n "$ns" rollout restart deployment
      done
      exit 1 ;;
    2) echo "== wave $wave: INCONCLUSIVE, stopping for a decision" >&2; exit 2 ;;
    5) echo "== wave $wave: still PENDING at the gate's --timeout, stopping for a decision" >&2; exit 2 ;;
    *) echo "== wave $wave: meshgate could not answer (exit $code), stopping" >&2; exit 3 ;;
  esac
done

echo "== all waves GO; the old control plane can go:"
echo "   istioctl uninstall --revision $old"
