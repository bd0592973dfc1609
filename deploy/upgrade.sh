#!/usr/bin/env bash
# Istio revision upgrade, wave by wave: a thin wrapper around meshgate's autopilot,
# `meshgate upgrade` (docs/upgrade.md), which relabels, restarts, waits, gates each wave on the
# daemon and rolls a NO-GO wave back to its recorded labels.
#
#   deploy/upgrade.sh meshgate.toml                       # dry run: every call printed
#   deploy/upgrade.sh meshgate.toml --execute --state upgrade-1-25.json
#   deploy/upgrade.sh meshgate.toml resume --execute --state upgrade-1-25.json --by alice
#
# The first argument is the configuration whose [plan] (revisions, waves) and
# [discovery.kubernetes] the autopilot uses; every other argument goes to `meshgate upgrade`
# unchanged. With MESHGATE_INSTALL_REVISION set (e.g. 1-25-0) and --execute given, the new istiod
# revision is installed beside the old one first (`istioctl install`, then its rollout waited for).
# The exit code is meshgate's: 0 done, 1 rolled back, 2 paused, 3 Lease held, 4 pre-check,
# 5 failed, 64 bad usage.
#
# Needs meshgate on PATH (istioctl and kubectl too for the install step), and MESHGATE_SERVER
# (default http://127.0.0.1:9400, e.g. after `kubectl -n meshgate port-forward svc/meshgate 9400`).
set -euo pipefail

usage="usage: upgrade.sh CONFIG [run|resume|abort] [meshgate upgrade options...]"
config="${1:?$usage}"
shift
[ -f "$config" ] || { echo "upgrade.sh: configuration $config: no such file ($usage)" >&2; exit 64; }

execute=no
for a in "$@"; do
  [ "$a" = "--execute" ] && execute=yes
done

rev="${MESHGATE_INSTALL_REVISION:-}"
if [ -n "$rev" ] && [ "$execute" = yes ]; then
  echo "+ istioctl install -y --set revision=$rev" >&2
  istioctl install -y --set revision="$rev"
  echo "+ kubectl -n istio-system rollout status deployment/istiod-$rev --timeout=5m" >&2
  kubectl -n istio-system rollout status "deployment/istiod-$rev" --timeout=5m
fi

echo "+ meshgate upgrade --config $config $*" >&2
exec meshgate upgrade --config "$config" "$@"
