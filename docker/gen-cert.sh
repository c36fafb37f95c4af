#!/bin/sh
# gen-cert.sh DIR: a self-signed certificate for nginx, DIR/stack.crt and
# DIR/stack.key, unless both exist already. Used by scripts/stack.sh and by
# the nginx container's entrypoint.
#
# ECDSA P-256: a TLS handshake signed with it costs a fraction of an RSA 2048
# one. Names: localhost, 127.0.0.1 and ::1, plus CERT_NAMES (space-separated
# host names or IP addresses, e.g. "broker.example 192.0.2.10").
set -eu

dir=${1:?usage: gen-cert.sh DIR}
crt=$dir/stack.crt
key=$dir/stack.key
[ -s "$crt" ] && [ -s "$key" ] && exit 0

mkdir -p "$dir"
san="DNS:localhost,IP:127.0.0.1,IP:::1"
for n in ${CERT_NAMES:-}; do
    case $n in
        *[!0-9.]*) case $n in *:*) san="$san,IP:$n" ;; *) san="$san,DNS:$n" ;; esac ;;
        *) san="$san,IP:$n" ;;
    esac
done

cnf=$(mktemp)
trap 'rm -f "$cnf" "$key.tmp"' EXIT
cat > "$cnf" <<EOF
[req]
distinguished_name = dn
x509_extensions = ext
prompt = no
[dn]
CN = localhost
O = broker stack (self-signed)
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
EOF
# The key never exists with loose permissions: umask first.
(umask 077 && openssl req -x509 -config "$cnf" -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -nodes -days "${CERT_DAYS:-825}" -keyout "$key.tmp" -out "$crt" 2>/dev/null)
mv "$key.tmp" "$key"
chmod 644 "$crt"
echo "gen-cert: wrote $crt ($san)"
