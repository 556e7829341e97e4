#!/usr/bin/env bash
# Installs edge as a systemd service: the binary, the hardened unit and
# /etc/edge/config.yaml (only when absent). --uninstall removes the binary
# and the unit, and keeps /etc/edge and /var/lib/edge (certificates).
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
ETC=${ETC:-/etc/edge}

for d in "$PREFIX" "$(dirname "$UNIT_DIR")" "$(dirname "$ETC")"; do
  [[ -w $d ]] || { echo "install.sh: cannot write to $d: run as root (sudo make install)" >&2; exit 1; }
done

if [[ ${1:-} == --uninstall ]]; then
  systemctl disable --now edge.service 2>/dev/null || true
  rm -f "$PREFIX/bin/edge" "$UNIT_DIR/edge.service"
  systemctl daemon-reload 2>/dev/null || true
  echo "edge uninstalled. Kept $ETC (configuration) and /var/lib/edge (certificates); remove them by hand if you want."
  exit 0
fi

[[ -x bin/edge ]] || { echo "install.sh: bin/edge missing: run make build first" >&2; exit 1; }
install -D -m 0755 bin/edge "$PREFIX/bin/edge"
sed "s#/usr/local/bin/edge#$PREFIX/bin/edge#g" systemd/edge.service > "$UNIT_DIR/edge.service"
chmod 0644 "$UNIT_DIR/edge.service"
install -d -m 0755 "$ETC"
if [[ ! -e $ETC/config.yaml ]]; then
  install -m 0644 systemd/config.production.yaml "$ETC/config.yaml"
  echo "wrote $ETC/config.yaml (a starting point: edit the host names, email and routes)"
else
  echo "kept the existing $ETC/config.yaml"
fi
systemctl daemon-reload 2>/dev/null || echo "(systemd is not running here: skipped daemon-reload)"
cat <<TXT
edge $("$PREFIX/bin/edge" version) installed.
Next:
  1. edit $ETC/config.yaml, then check it: edge validate -config $ETC/config.yaml
  2. sudo systemctl enable --now edge
  3. journalctl -u edge -f          (logs)    sudo systemctl reload edge   (after config edits)
TXT
