#!/bin/sh
# deps.sh: installs the Debian packages the build, the tests and the demo
# need. Idempotent: does nothing when everything is present. As root it runs
# apt-get; otherwise it prints the exact command to run and fails.
#
#   scripts/deps.sh            what `make`, `make test` and `make run` need
#   scripts/deps.sh PKG...     those packages as well (used by other targets)
set -eu

PKGS="gcc make pkg-config libc6-dev
libevent-dev libhiredis-dev libwslay-dev libjansson-dev libssl-dev
redis-server redis-tools curl nginx-light openssl
python3 python3-pytest python3-pytest-timeout python3-websockets python3-yaml
valgrind clang libclang-rt-14-dev"

missing=""
for p in $PKGS "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing Debian packages:$missing" >&2
    echo "deps.sh: install them with:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
fi
echo "deps.sh: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Debian starts redis-server and nginx as services on install where it can;
# the tests start their own on free ports, so that does no harm.
apt-get install -y -qq --no-install-recommends $missing
