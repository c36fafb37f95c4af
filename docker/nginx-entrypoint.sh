#!/bin/sh
# nginx-entrypoint.sh: the nginx container's command. A self-signed
# certificate on first start (kept in the "certs" volume; CERT_NAMES adds
# names to it), then nginx in the foreground with the prefix /srv/nginx.
set -eu
gen-cert.sh /srv/nginx/certs
# The broker's workers each listen on a Unix socket of the shared volume:
# nginx balances over them with least_conn. Without any (an older broker,
# another volume), the image's upstream.conf (broker:8080) stays.
socks=$(ls /run/broker/broker.sock.* 2>/dev/null || true)
if [ -n "$socks" ]; then
    for s in $socks; do echo "server unix:$s;"; done > /srv/nginx/upstream.conf
fi
exec nginx -p /srv/nginx/ -c /srv/nginx/nginx.conf -g 'daemon off;'
