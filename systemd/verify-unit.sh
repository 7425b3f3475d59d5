#!/usr/bin/env bash
# Check systemd/hangin.service with `systemd-analyze verify` (any message fails) and print its
# `systemd-analyze security --offline=true` exposure score.
# Usage: systemd/verify-unit.sh [PATH-TO-HANGIN-BINARY]
# verify insists that ExecStart's binary exists, so a copy of the unit whose ExecStart points at
# the given binary (default: target/debug/hangin) is checked; everything else is byte-identical.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(realpath "${1:-target/debug/hangin}")"
[ -x "$bin" ] || { echo "no executable at $bin (cargo build first)" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not found (apt-get install systemd)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed "s#^ExecStart=/usr/bin/hangin #ExecStart=$bin #" systemd/hangin.service > "$tmp/hangin.service"
grep -q "^ExecStart=$bin " "$tmp/hangin.service" || { echo "ExecStart=/usr/bin/hangin … not found in the unit" >&2; exit 1; }
out="$(systemd-analyze verify "$tmp/hangin.service" 2>&1)" || { echo "$out" >&2; exit 1; }
if [ -n "$out" ]; then echo "systemd-analyze verify is not clean:" >&2; echo "$out" >&2; exit 1; fi
echo "systemd-analyze verify: clean"
systemd-analyze security --offline=true --no-pager "$tmp/hangin.service" | grep 'Overall exposure level'
