#!/bin/sh
# nginx-entrypoint.sh: the nginx container's command. A self-signed
# certificate on first start (kept in the "certs" volume; CERT_NAMES adds
# names to it), then nginx in the foreground with the prefix /srv/nginx.
set -eu
gen-cert.sh /srv/nginx/certs
exec nginx -p /srv/nginx/ -c /srv/nginx/nginx.conf -g 'daemon off;'
