#!/usr/bin/env bash
# Install edge-lstm as a hardened systemd service (Debian, Raspberry Pi OS).
#
#   sudo deploy/install.sh --config configs/pi-mqtt.toml --bundle bundles/airline-lstm
#   sudo deploy/install.sh --pip 'edge-lstm[litert]==0.1.0' --config my.toml
#   deploy/install.sh --dry-run ...          # print what would be done, change nothing
#
# Creates the system user edge-lstm (no shell, no home; in dialout for serial sensors), a
# virtualenv in /opt/edge-lstm, /etc/edge-lstm/{edge-lstm.toml,env} (root:edge-lstm 0640),
# /var/lib/edge-lstm/bundles, and the systemd unit; validates the config with --check, then
# enables and starts the service. Existing config and env files are never overwritten.
set -euo pipefail

PREFIX=/opt/edge-lstm
ETC=/etc/edge-lstm
STATE=/var/lib/edge-lstm
UNIT=/etc/systemd/system/edge-lstm.service
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PIP_SPEC="$(cd "$HERE/.." && pwd)"
CONFIG=""
BUNDLE=""
DRY=0

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG="$2"; shift 2 ;;
    --bundle) BUNDLE="$2"; shift 2 ;;
    --pip) PIP_SPEC="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage 2 ;;
  esac
done

run() { if [ "$DRY" = 1 ]; then echo "+ $*"; else "$@"; fi; }

if [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo), or with --dry-run" >&2; exit 2
fi
if [ -n "$CONFIG" ] && [ ! -f "$CONFIG" ]; then echo "install.sh: no config file $CONFIG" >&2; exit 2; fi
if [ -n "$BUNDLE" ] && [ ! -f "$BUNDLE/manifest.json" ]; then
  echo "install.sh: $BUNDLE is not a bundle (no manifest.json)" >&2; exit 2
fi

# 1. a dedicated system user
if ! id -u edge-lstm >/dev/null 2>&1; then
  run useradd --system --user-group --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin edge-lstm
fi
run usermod -a -G dialout edge-lstm

# 2. the software, in its own virtualenv
run python3 -m venv "$PREFIX"
run "$PREFIX/bin/pip" install --upgrade pip
run "$PREFIX/bin/pip" install "$PIP_SPEC"

# 3. config (root-owned, readable by the service), secrets, state
run install -d -m 0750 -o root -g edge-lstm "$ETC"
run install -d -m 0750 -o edge-lstm -g edge-lstm "$STATE" "$STATE/bundles"
if [ -n "$CONFIG" ] && [ ! -e "$ETC/edge-lstm.toml" ]; then
  run install -m 0640 -o root -g edge-lstm "$CONFIG" "$ETC/edge-lstm.toml"
fi
if [ ! -e "$ETC/env" ]; then
  run install -m 0640 -o root -g edge-lstm /dev/null "$ETC/env"
  if [ "$DRY" = 0 ]; then echo "EDGE_MQTT_PASSWORD=" > "$ETC/env"; else echo "+ echo EDGE_MQTT_PASSWORD= > $ETC/env"; fi
  echo "install.sh: put the broker password in $ETC/env (EDGE_MQTT_PASSWORD=...)"
fi
if [ -n "$BUNDLE" ]; then
  run cp -r "$BUNDLE" "$STATE/bundles/"
  run chown -R edge-lstm:edge-lstm "$STATE/bundles"
fi

# 4. the unit
run install -m 0644 "$HERE/edge-lstm.service" "$UNIT"
run systemctl daemon-reload

# 5. check, then start
if run runuser -u edge-lstm -- "$PREFIX/bin/edge-lstm" run --config "$ETC/edge-lstm.toml" --check; then
  run systemctl enable --now edge-lstm
  echo "install.sh: edge-lstm is running; logs: journalctl -u edge-lstm -f"
else
  echo "install.sh: fix $ETC/edge-lstm.toml (see the error above), then: systemctl enable --now edge-lstm" >&2
  exit 1
fi
