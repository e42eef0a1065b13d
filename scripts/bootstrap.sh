#!/usr/bin/env bash
# Install what linkwatch's lab, tests and benchmarks need on a fresh Debian/Ubuntu machine (root):
# system tools (iproute2, nftables, conntrack, radvd for the lab's router advertisements) and a
# virtualenv in .venv with the package and pytest.
# With --test-tools also what the tests drive from outside: Debian's headless Chromium and its
# chromedriver (the web UI's browser test), net-snmp's snmptrapd/snmpwalk and smitools' smilint
# (the SNMP tests), mosquitto and mosquitto-clients (the MQTT tests), npm (to fetch the IETF base
# MIBs, scripts/fetch-ietf-mibs.sh), and
# systemd-nspawn (systemd-container) with debootstrap (a Debian 12 booted with systemd as PID 1),
# and qemu-user-static with binfmt-support (arm64 and armhf roots under emulation: test_arm.py),
# and Debian's prometheus package for its promtool (the alerting rules: test_prometheus.py).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=0
[ "${1:-}" = "--test-tools" ] && tools=1

need_apt=()
command -v ip >/dev/null || need_apt+=(iproute2)
command -v nft >/dev/null || need_apt+=(nftables)
command -v conntrack >/dev/null || need_apt+=(conntrack)
command -v pgrep >/dev/null || need_apt+=(procps)
command -v setpriv >/dev/null || need_apt+=(util-linux)
command -v radvd >/dev/null || [ -x /usr/sbin/radvd ] || need_apt+=(radvd)  # the lab's providers
if [ "$tools" = 1 ]; then
    command -v chromium >/dev/null || need_apt+=(chromium)
    command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
    command -v snmptrapd >/dev/null || need_apt+=(snmptrapd)
    command -v snmpwalk >/dev/null || need_apt+=(snmp)
    command -v smilint >/dev/null || need_apt+=(smitools)
    [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)  # test_mqtt_broker.py, bench/bench_mqtt.py: the broker
    command -v mosquitto_sub >/dev/null || need_apt+=(mosquitto-clients)  # ... and the subscriber
    command -v npm >/dev/null || need_apt+=(npm)
    command -v systemd-nspawn >/dev/null || need_apt+=(systemd-container)  # test_systemd.py
    command -v keepalived >/dev/null || [ -x /usr/sbin/keepalived ] || need_apt+=(keepalived)  # lab up --pair, test_keepalived_pair.py
    command -v debootstrap >/dev/null || need_apt+=(debootstrap)
    [ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || command -v qemu-aarch64-static >/dev/null ||
        need_apt+=(qemu-user-static)  # test_arm.py, scripts/build-deb.sh --arch
    command -v update-binfmts >/dev/null || need_apt+=(binfmt-support)
    command -v promtool >/dev/null || need_promtool=1  # installed below, without starting its server
fi
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null; then need_apt+=(python3 python3-venv python3-pip); fi
if command -v "$PY" >/dev/null && ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
    need_apt+=(python3-venv python3-pip)
fi
if ((${#need_apt[@]})); then
    if [ "$(id -u)" != 0 ]; then echo "bootstrap: need root to install ${need_apt[*]}" >&2; exit 1; fi
    echo "bootstrap: installing ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if [ "${need_promtool:-0}" = 1 ]; then
    # Debian ships promtool only in the prometheus package, whose maintainer scripts start the
    # Prometheus server (invoke-rc.d where systemd is not PID 1, as in a container or a chroot;
    # deb-systemd-invoke under systemd). A test machine runs no server: a policy-rc.d that says
    # "101: not allowed" stops both from starting it (one left by the system, e.g. Docker's, is kept),
    # it is disabled at boot after, and --no-install-recommends leaves out prometheus-node-exporter
    # (another service). Heavy for one tool: 14 packages, 23 MB to download, 317 MiB installed on
    # Debian 12 (the server 94 MiB, its web UI's libjs-moment-timezone 213 MiB).
    if [ "$(id -u)" != 0 ]; then echo "bootstrap: need root to install prometheus (promtool)" >&2; exit 1; fi
    echo "bootstrap: installing prometheus (for promtool; its service is not started)" >&2
    export DEBIAN_FRONTEND=noninteractive
    ((${#need_apt[@]})) || apt-get update -qq
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        trap 'rm -f "$policy"' EXIT
        printf '#!/bin/sh\n# bootstrap.sh: no service starts while prometheus is installed\nexit 101\n' >"$policy"
        chmod 755 "$policy"
    fi
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    if [ "$(trap -p EXIT)" ]; then rm -f "$policy"; trap - EXIT; fi
    # Not at boot either: systemd's link (made even where systemd is not running) and SysV's.
    if command -v systemctl >/dev/null; then systemctl disable -q prometheus.service >/dev/null 2>&1 || true; fi
    update-rc.d prometheus disable >/dev/null 2>&1 || true
fi

"$PY" - <<'PYEOF'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"bootstrap: linkwatch needs Python 3.11 or newer, found {sys.version.split()[0]}")
PYEOF

stamp=.venv/.linkwatch-installed
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi
