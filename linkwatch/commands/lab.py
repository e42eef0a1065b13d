"""`linkwatch lab …`: build, inspect, break and tear down the namespace lab (root only).

Each handler is a thin wrapper over :mod:`linkwatch.lab.topology`, :mod:`~linkwatch.lab.faults`
and :mod:`~linkwatch.lab.demo`; domain errors become one line on stderr and exit code 1.
Also runnable alone: ``python -m linkwatch.commands.lab up --name N --no-engine``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from linkwatch.commands import common
from linkwatch.lab.safety import NotInLabError
from linkwatch.lab.plan import (
    DEFAULT_NAME,
    DEFAULT_UPLINKS,
    DNS6_SERVER,
    DNS_SERVER,
    ECHO6_SERVER,
    ECHO_PORT,
    ECHO_SERVER,
    LAN6_CLIENT,
    LAN_CLIENT,
    MAX_UPLINKS,
    LabError,
    LabSpec,
)

NAME = "lab"
HELP = "build and drive the network-namespace lab (root)"
ERRORS = (LabError, NotInLabError)
DEFAULT_WEB = "127.0.0.1:8080"  # FaultError and FlowError are LabErrors


def _guard(command: str, handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ERRORS as e:
            print(f"linkwatch lab {command}: {e}", file=sys.stderr)
            return 1
    return run


def cmd_up(args: argparse.Namespace) -> int:
    from linkwatch.lab import topology

    if args.pair:
        return _up_pair(args)
    options = topology.EngineOptions(web=args.web, ipv6=args.ipv6)
    spec = topology.up(LabSpec(args.name, DEFAULT_UPLINKS if args.uplinks is None else args.uplinks), engine=not args.no_engine, options=options)
    print(f"lab {spec.name!r} is up: {', '.join(spec.namespaces)}")
    for u in spec.uplink_list:
        print(f"  {u.name}: router {u.interface} {u.address}/29 via {u.gateway} ({spec.provider_ns(u.index)})")
    print(f"  client {LAN_CLIENT} in {spec.client_ns}; echo {ECHO_SERVER}:{ECHO_PORT}, "
          f"DNS {DNS_SERVER}, ICMP targets 203.0.113.1-12 in {spec.inet_ns}")
    print(f"  IPv6: client {LAN6_CLIENT}; uplink k 2001:db8:k::2/64 via fe80::1; echo [{ECHO6_SERVER}]:{ECHO_PORT}, "
          f"DNS {DNS6_SERVER}, ICMP targets 2001:db8:ff::1-c" + (" (probed by the engine)" if args.ipv6 else ""))
    print(f"  engine: {'control socket ' + spec.control_socket if not args.no_engine else 'not started (--no-engine)'}")
    if args.web and not args.no_engine:
        from linkwatch.lab import web

        print(f"  web UI: {web.url(args.web)} (log in with password {web.LAB_PASSWORD!r})")
    print(f"  tear down: linkwatch lab down --name {spec.name}")
    return 0


def _up_pair(args: argparse.Namespace) -> int:
    from linkwatch.lab import pair, pairlab

    if args.no_engine or args.web or args.ipv6:
        raise LabError("--pair runs both engines and keepalived, IPv4 only, without a web UI: "
                       "leave out --no-engine, --web and --ipv6")
    spec = pairlab.up(pair.PairSpec(args.name, 1 if args.uplinks is None else args.uplinks, args.advert_int))
    print(f"router pair {spec.name!r} is up: {', '.join(spec.namespaces)}")
    for r in spec.routers:
        ups = ", ".join(f"{u.name} {u.interface} {u.address}" for u in r.uplink_list)
        print(f"  {r.role} ({r.ns}): LAN {r.lan_address}, VRRP priority {r.priority}, uplinks {ups}; "
              f"engine {r.control_socket}; keepalived log {r.keepalived_log}")
    print(f"  client {LAN_CLIENT} in {spec.lab.client_ns}, default via the virtual gateway {pair.VIRTUAL_GATEWAY} "
          f"(now on {pairlab.holder(spec)}); VRRPv3 advert_int {spec.advert_int:g}s")
    print(f"  break ra: linkwatch lab fault --name {spec.name} wan1 blackhole")
    print(f"  tear down: linkwatch lab down --name {spec.name}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from linkwatch.lab import topology

    report = topology.down(args.name)
    if not report.stopped and not report.deleted:
        print(f"lab {args.name!r}: nothing to tear down")
    else:
        print(f"lab {args.name!r} is down: stopped {', '.join(report.stopped) or 'nothing'}; "
              f"deleted {', '.join(report.deleted) or 'no namespace'}")
    return 0


def format_status(st) -> str:
    lines = [f"lab {st.spec.name!r}, {st.spec.uplinks} uplink(s), state in {st.spec.state_dir}"]
    for ns, present in st.namespaces.items():
        lines.append(f"  namespace {ns}: {'present' if present else 'MISSING'}")
    for rec, alive in st.processes:
        lines.append(f"  {rec.role}: pid {rec.pid} {'running' if alive else 'NOT RUNNING'}")
    for name, fault in st.faults.items():
        lines.append(f"  fault {name}: {fault}")
    if st.engine is None:
        lines.append(f"  engine: not answering ({st.engine_error})")
    else:
        for u in st.engine.uplinks:
            rtt, loss = u.rtt_ms, u.loss_pct
            lines.append(f"  engine {u.name}: {u.state.value}{' ACTIVE' if u.active else ''} "
                         f"rtt={'-' if rtt is None else f'{rtt:.1f}ms'} loss={'-' if loss is None else f'{loss:.0f}%'}")
        lines.append(f"  engine active: {', '.join(st.engine.active) or '-'}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    from linkwatch.lab import pairlab, topology

    pair = pairlab.discover_pair(args.name)
    if pair is not None:
        print(pairlab.describe(pair))
        return 0
    print(format_status(topology.status(args.name)))
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    from linkwatch.lab import faults

    print(faults.apply_fault(args.name, args.uplink, faults.parse_fault(args.fault)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from linkwatch.lab import demo

    return demo.run_demo(name=args.name, keep=args.keep, uplinks=args.uplinks,
                         web=None if args.no_web else args.web, pause=args.pause, ipv6=not args.no_ipv6)


def register(subparsers) -> None:
    """Add the ``lab`` command (up, down, status, fault, demo) to an argparse subparsers object."""
    lab = subparsers.add_parser(NAME, help=HELP,
                                description="A small internet in network namespaces: the demo and the test bed.")
    sub = lab.add_subparsers(dest="lab_command", metavar="SUBCOMMAND")
    sub.required = True

    def named(name: str, help_text: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text)
        sp.add_argument("--name", default=DEFAULT_NAME, help=f"lab name (namespaces lw-NAME-*; default {DEFAULT_NAME})")
        sp.set_defaults(func=_guard(name, handler))
        return sp

    def uplinks_arg(sp: argparse.ArgumentParser, default: int | None = DEFAULT_UPLINKS) -> None:
        sp.add_argument("--uplinks", type=int, default=default,
                        help=f"number of uplinks, 1-{MAX_UPLINKS} (default {DEFAULT_UPLINKS}; with --pair: per router, "
                             "1 or 2, default 1)" if default is None else
                        f"number of uplinks, 1-{MAX_UPLINKS} (default {DEFAULT_UPLINKS})")

    sp = named("up", "build the lab (and start the engine in its router)", cmd_up)
    uplinks_arg(sp, None)
    sp.add_argument("--no-engine", action="store_true", help="build the network and services only")
    sp.add_argument("--pair", action="store_true", help="two routers sharing the LAN's gateway through keepalived "
                    "(VRRP), each with its own engine and --uplinks (1 or 2, default 1) uplinks (docs/keepalived.md)")
    sp.add_argument("--advert-int", type=float, default=0.2, metavar="SECONDS",
                    help="VRRP advert interval of --pair (default 0.2)")
    sp.add_argument("--ipv6", action="store_true", help="the engine probes IPv6 targets too (dual stack)")
    sp.add_argument("--web", nargs="?", const=DEFAULT_WEB, metavar="ADDR:PORT",
                    help=f"also start the web UI on the host's loopback (default {DEFAULT_WEB})")
    named("down", "stop what the lab started and delete its namespaces", cmd_down)
    named("status", "namespaces, processes, faults and the engine's view", cmd_status)
    sp = named("fault", "inject or clear a fault on an uplink's provider", cmd_fault)
    sp.add_argument("uplink", help="wanK, upK or K")
    sp.add_argument("fault", nargs="+", metavar="FAULT", help="blackhole [ipv4|ipv6] | loss PCT | carrier-down | shape RATE QUEUE | flap DOWN UP DURATION | no-ra | clear")
    sp = named("demo", "failover demo: blackhole, carrier loss, failback, with a live client flow", cmd_demo)
    uplinks_arg(sp)
    sp.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    sp.add_argument("--web", default=DEFAULT_WEB, metavar="ADDR:PORT",
                    help=f"where the web UI listens, on loopback (default {DEFAULT_WEB})")
    sp.add_argument("--no-web", action="store_true", help="no web UI")
    sp.add_argument("--no-ipv6", action="store_true", help="IPv4 only (by default the demo is dual stack: the "
                    "engine probes IPv6 too, and a second client flow shows what IPv6 traffic lives through)")
    sp.add_argument("--pause", type=float, default=0.0, metavar="SECONDS",
                    help="seconds to wait before the first fault, to open the dashboard (default 0)")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m linkwatch.commands.lab SUBCOMMAND ...``: the command on its own."""
    return common.main([sys.modules[__name__]], argv, alone=NAME)


if __name__ == "__main__":
    raise SystemExit(main())
