#!/usr/bin/env bash
# Runs every test of edge with the race detector, after making sure the real
# peers the tests use are installed: redis-server and redis-sentinel, Chromium
# and NSS tools, testssl.sh, Node.js/npm, h2spec, systemd-analyze, nginx,
# PHP-FPM and update-ca-certificates (edge trust). TestDebianPackage installs
# nfpm itself (scripts/deb.sh, pinned, into bin/tools). Nothing here is
# skipped in CI: a missing peer is installed, or the script stops and says
# why.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "Go is not installed: get Go 1.26 from https://go.dev/dl/"

# Debian packages: command -> package.
declare -A pkgs=(
  [redis-server]=redis-server
  [redis-sentinel]=redis-sentinel
  [chromium]=chromium
  [certutil]=libnss3-tools
  [update-ca-certificates]=ca-certificates
  [dpkg-deb]=dpkg
  [testssl]=testssl.sh
  [node]=nodejs
  [npm]=npm
  [systemd-analyze]=systemd
  [openssl]=openssl
  [nginx]=nginx
  [php]=php-cli
)
missing=()
for cmd in "${!pkgs[@]}"; do
  command -v "$cmd" >/dev/null || missing+=("${pkgs[$cmd]}")
done
# php-fpm's binary carries the PHP version (php-fpm8.2); the php-fpm package
# pulls the distribution's current one.
compgen -G '/usr/sbin/php-fpm*' >/dev/null || missing+=(php-fpm)
if ((${#missing[@]})); then
  say "installing test peers: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "need root (or sudo) to apt-get install: ${missing[*]}"
    SUDO=sudo
  else
    SUDO=
  fi
  command -v apt-get >/dev/null || die "no apt-get: install ${missing[*]} by hand"
  $SUDO apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi

# h2spec has no go.mod upstream; install the pinned release into a private bin.
export GOBIN="$PWD/bin/tools"
if [[ ! -x "$GOBIN/h2spec" ]]; then
  say "installing h2spec"
  go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible || die "go install h2spec failed"
fi
export PATH="$GOBIN:$PATH"

# Node test dependencies (ws) for the packages that run Node clients.
for d in $(git ls-files '*/package-lock.json' | xargs -r -n1 dirname); do
  if [[ ! -d "$d/node_modules" ]]; then
    say "npm ci in $d"
    (cd "$d" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in $d failed"
  fi
done

say "go vet"
go vet ./...
say "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
[[ -z "$unformatted" ]] || die "gofmt needed: $unformatted"
say "go test -race"
go test -race -count=1 -timeout 30m ./... "$@"
