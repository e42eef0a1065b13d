#!/usr/bin/env bash
# The IETF base MIB modules (SNMPv2-SMI, SNMPv2-TC, SNMPv2-CONF) that smilint and the net-snmp
# tools need to read LINKWATCH-MIB. Debian's packages leave them out (licence), so they are taken
# from the npm registry's `net-snmp` package, which ships them, into .cache/ietf-mibs/ (not in
# git). Prints the directory. Needs npm (bootstrap.sh --test-tools installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/ietf-mibs
want=(SNMPv2-SMI SNMPv2-TC SNMPv2-CONF)
have=1
for m in "${want[@]}"; do [ -s "$dest/$m.txt" ] || have=0; done
if [ "$have" = 0 ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && npm pack --silent net-snmp@3.29.2 >/dev/null && tar xzf net-snmp-3.29.2.tgz)
    mkdir -p "$dest"
    for m in "${want[@]}"; do cp "$tmp/package/lib/mibs/$m.mib" "$dest/$m.txt"; done
fi
echo "$(pwd)/$dest"
