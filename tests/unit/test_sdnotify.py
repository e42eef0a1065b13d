"""sd_notify: messages reach a datagram socket as systemd's would receive them; nothing outside systemd."""

import os
import socket

import pytest

from linkwatch.daemon.sdnotify import Notifier


def listen(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    return s, path


def test_messages_arrive_and_the_watchdog_interval_is_half_the_limit(tmp_path):
    s, path = listen(tmp_path)
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())})
    assert n.enabled and n.watchdog_interval == 5.0
    assert n.notify("READY=1", "STATUS=active: wan1")
    assert s.recv(4096) == b"READY=1\nSTATUS=active: wan1"
    s.close()


def test_outside_systemd_nothing_is_sent_and_a_gone_socket_does_not_raise(tmp_path):
    assert Notifier({}).notify("READY=1") is False
    assert Notifier({}).watchdog_interval is None
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.notify("READY=1") is False
    other = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None, "the watchdog is meant for another process"


def test_ready_waits_for_the_routes_and_comes_once(tmp_path):
    s, path = listen(tmp_path)
    n = Notifier({"NOTIFY_SOCKET": path})
    assert not n.announce_ready(False, "STATUS=active: wan1")
    assert s.recv(4096) == b"STATUS=waiting: the kernel refused the routes"
    assert not n.announce_ready(False, "STATUS=active: wan1") and not n.ready  # said once
    assert n.announce_ready(True, "STATUS=active: wan1") and n.ready
    assert s.recv(4096) == b"READY=1\nSTATUS=active: wan1"
    assert not n.announce_ready(True, "STATUS=active: wan1")  # once
    s.settimeout(0.1)
    with pytest.raises(socket.timeout):
        s.recv(4096)
