#!/usr/bin/env bash
# Builds the Debian package bin/edge_<version>_<arch>.deb with nfpm (pinned,
# installed into bin/tools like h2spec): the binary in /usr/bin, the unit in
# /lib/systemd/system, /etc/edge/config.yaml as a conffile, the demo page and
# README.Debian (packaging/deb/). Prints the path of the package.
#   VERSION=1.2.0 make deb     a release; otherwise 0.0.0~git<date>.<commit>
set -euo pipefail
cd "$(dirname "$0")/.."
NFPM_VERSION=v2.48.0

export GOBIN="$PWD/bin/tools"
# go version -m names the module version the binary was built from.
if ! go version -m "$GOBIN/nfpm" 2>/dev/null | grep -q "github.com/goreleaser/nfpm/v2[[:space:]]*$NFPM_VERSION"; then
  echo "installing nfpm $NFPM_VERSION" >&2
  go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION" >&2
fi

# Debian versions start with a digit: a tag v1.2.0 becomes 1.2.0, an
# untagged tree 0.0.0~git20261207.c12329e (~ sorts before any release).
version=${VERSION:-$(git describe --tags --exact-match 2>/dev/null || true)}
version=${version#v}
if [[ ! $version =~ ^[0-9] ]]; then
  version="0.0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d).$(git rev-parse --short HEAD)"
fi
arch=$(go env GOARCH)

rm -rf bin/deb && mkdir -p bin/deb
CGO_ENABLED=0 GOARCH=$arch go build -trimpath \
  -ldflags "-s -w -X main.version=$version -X main.commit=$(git rev-parse --short=12 HEAD)" \
  -o bin/deb/edge ./cmd/edge
sed 's#/usr/local/bin/edge#/usr/bin/edge#g; s#Installed by `make install` (scripts/install.sh)#Installed by the edge Debian package#' \
  systemd/edge.service > bin/deb/edge.service

out="bin/edge_${version}_${arch}.deb"
VERSION=$version GOARCH=$arch "$GOBIN/nfpm" package --config packaging/deb/nfpm.yaml --packager deb --target "$out" >&2
echo "$out"
