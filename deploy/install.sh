#!/usr/bin/env bash
# Install edge-lstm as a hardened systemd service (Debian, Raspberry Pi OS).
#
#   sudo deploy/install.sh --config configs/pi-mqtt.toml --bundle bundles/airline
#   sudo deploy/install.sh --pip 'edge_lstm-0.1.0-py3-none-any.whl[litert]' --config my.toml
#   deploy/install.sh --dry-run ...          # print what would be done, change nothing
#
# Creates the system user edge-lstm (no shell, no home; in dialout for serial sensors), a
# virtualenv in /opt/edge-lstm with edge-lstm and its litert extra (default: this clone),
# /etc/edge-lstm/{edge-lstm.toml,env} (root:edge-lstm 0640), /var/lib/edge-lstm/bundles/<name
# of --bundle> (the config's model.bundle must name it), and the systemd unit; validates the
# config with --check, then enables and starts the service. Existing config and env files are
# never overwritten.
set -euo pipefail

PREFIX=/opt/edge-lstm
ETC=/etc/edge-lstm
STATE=/var/lib/edge-lstm
UNIT=/etc/systemd/system/edge-lstm.service
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PIP_SPEC="$(cd "$HERE/.." && pwd)[litert]"   # this clone, with the LiteRT interpreter
CONFIG=""
BUNDLE=""
DRY=0

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

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
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "install.sh: edge-lstm needs Python 3.11 or newer; python3 is $(python3 -V 2>&1 || echo missing)" >&2; exit 2
fi
if [ -n "$CONFIG" ] && [ ! -f "$CONFIG" ]; then echo "install.sh: no config file $CONFIG" >&2; exit 2; fi
if [ -n "$BUNDLE" ] && [ ! -f "$BUNDLE/manifest.json" ]; then
  echo "install.sh: $BUNDLE is not a bundle (no manifest.json)" >&2; exit 2
fi

# The config the service will read: an existing one is kept, else --config is installed.
EFFECTIVE="$CONFIG"
if [ -e "$ETC/edge-lstm.toml" ]; then
  EFFECTIVE="$ETC/edge-lstm.toml"
  [ -n "$CONFIG" ] && echo "install.sh: keeping the existing $ETC/edge-lstm.toml ($CONFIG is not installed over it)"
fi
# The bundle goes to $STATE/bundles/<its directory name>: the config's model.bundle must say so.
if [ -n "$BUNDLE" ]; then
  TARGET="$STATE/bundles/$(basename "$BUNDLE")"
  if [ -n "$EFFECTIVE" ]; then
    WANT="$(python3 - "$EFFECTIVE" "$ETC" <<'EOF'
import os, sys, tomllib
bundle = tomllib.loads(open(sys.argv[1], encoding="utf-8").read()).get("model", {}).get("bundle", "")
print(os.path.normpath(os.path.join(sys.argv[2], bundle)) if bundle else "")  # relative to the installed config
EOF
)" || { echo "install.sh: $EFFECTIVE is not valid TOML (edge-lstm run --config $EFFECTIVE --check says why)" >&2; exit 2; }
    if [ "$WANT" != "$TARGET" ]; then
      echo "install.sh: $EFFECTIVE: key 'model.bundle' is '${WANT:-empty}', but --bundle $BUNDLE installs to $TARGET;" \
           "set model.bundle = \"$TARGET\" (or name the bundle directory after the config's)" >&2
      exit 2
    fi
  fi
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
  run install -d -m 0750 -o edge-lstm -g edge-lstm "$TARGET"
  run cp -r "$BUNDLE/." "$TARGET/"
  run chown -R edge-lstm:edge-lstm "$TARGET"
fi

# 4. the unit
run install -m 0644 "$HERE/edge-lstm.service" "$UNIT"
run systemctl daemon-reload

# 5. check (as the service will run: its user, its environment file), then start
check() { set -a; . "$ETC/env"; set +a; runuser -u edge-lstm -- "$PREFIX/bin/edge-lstm" run --config "$ETC/edge-lstm.toml" --check; }
if [ "$DRY" = 1 ]; then
  echo "+ runuser -u edge-lstm -- $PREFIX/bin/edge-lstm run --config $ETC/edge-lstm.toml --check   (with $ETC/env)"
  echo "+ systemctl enable --now edge-lstm"
  echo "install.sh: dry run: nothing was changed; run it as root without --dry-run to install and start edge-lstm"
elif (check); then
  run systemctl enable --now edge-lstm
  echo "install.sh: edge-lstm started; logs: journalctl -u edge-lstm -f"
else
  echo "install.sh: fix $ETC/edge-lstm.toml (see the error above), then: systemctl enable --now edge-lstm" >&2
  exit 1
fi
