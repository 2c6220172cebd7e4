"""Network escapes: TCP to the host's loopback, UDP and DNS, raw and netlink sockets."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest

from tests.sandbox.conftest import RunAttack, layer_state, reason


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    """A TCP listener on the host's loopback that the attack tries to reach."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        yield listener


def _connection_arrived(listener: socket.socket) -> bool:
    ready, _, _ = select.select([listener], [], [], 0.5)
    return bool(ready)


def test_tcp_connect_to_host_loopback_is_refused_at_run_time(
    run_attack: RunAttack, tcp_listener: socket.socket
) -> None:
    port = tcp_listener.getsockname()[1]
    result = run_attack(
        f"""
        import socket

        def attack(ctx):
            socket.create_connection(("127.0.0.1", {port}), timeout=5).sendall(b"stolen")
        """
    )
    assert not _connection_arrived(tcp_listener)
    status, rule, message = reason(result)
    assert (status, rule) == ("failed", "train.exception")
    # The trainer may open TCP sockets (a one-rank process group), but only in a network
    # namespace of its own: its 127.0.0.1 is not the host's.
    assert "Connection refused" in message
    assert layer_state(result, "seccomp") == "active"
    assert layer_state(result, "network_namespace") == "active"


def test_tcp_connect_at_import_time_is_refused(
    run_attack: RunAttack, tcp_listener: socket.socket
) -> None:
    port = tcp_listener.getsockname()[1]
    result = run_attack(
        "def attack(ctx):\n    pass\n",
        architecture_prelude=f"""
        import socket
        socket.create_connection(("127.0.0.1", {port}), timeout=5)
        """,
    )
    assert not _connection_arrived(tcp_listener)
    status, rule, message = reason(result)
    assert (status, rule) == ("rejected", "probe.import_failed")
    assert "Address family not supported" in message


def test_udp_and_dns_never_leave_the_worker(run_attack: RunAttack) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        port = receiver.getsockname()[1]
        result = run_attack(
            f"""
            import socket

            def attack(ctx):
                outcomes = []
                try:
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
                        b"x", ("127.0.0.1", {port})
                    )
                    outcomes.append("udp sent")
                except OSError as exc:
                    outcomes.append(f"udp: {{exc}}")
                try:
                    socket.getaddrinfo("pypi.org", 443)
                    outcomes.append("dns resolved")
                except OSError as exc:
                    outcomes.append(f"dns: {{exc}}")
                raise RuntimeError("; ".join(outcomes))
            """
        )
        ready, _, _ = select.select([receiver], [], [], 0.5)
    assert not ready
    _, rule, message = reason(result)
    assert rule == "train.exception"
    # The datagram goes to the trainer's own loopback, never the host's; no name resolves.
    assert "dns:" in message and "resolved" not in message


def test_raw_and_netlink_sockets_are_refused(run_attack: RunAttack) -> None:
    # In a worker without loopback TCP (here the probe, importing architecture.py) every
    # family but AF_UNIX fails; the trainer's and the ranks' narrower allowance is tested below.
    result = run_attack(
        "def attack(ctx):\n    pass\n",
        architecture_prelude="""
        import socket

        outcomes = []
        for family, kind in [(socket.AF_PACKET, socket.SOCK_RAW),
                             (socket.AF_NETLINK, socket.SOCK_RAW),
                             (socket.AF_INET, socket.SOCK_RAW),
                             (socket.AF_INET6, socket.SOCK_STREAM)]:
            try:
                socket.socket(family, kind)
                outcomes.append(f"{family.name} opened")
            except OSError as exc:
                outcomes.append(f"{family.name}: errno {exc.errno}")
        raise RuntimeError("; ".join(outcomes))
        """,
    )
    _, rule, message = reason(result)
    assert rule == "probe.import_failed"
    assert "opened" not in message
    for family in ("AF_PACKET", "AF_NETLINK", "AF_INET", "AF_INET6"):
        assert f"{family}: errno 97" in message


@pytest.mark.parametrize("loop", ["trainer", "ranks"])
def test_loops_get_loopback_tcp_only_inside_their_namespace(
    run_attack: RunAttack, tcp_listener: socket.socket, loop: str
) -> None:
    # The trainer (for a one-rank process group) and the ranks (gloo between them) may use
    # AF_INET and route netlink inside their private namespace: the host's loopback stays out
    # of reach, and every other family stays closed.
    port = tcp_listener.getsockname()[1]
    ranks = loop == "ranks"
    result = run_attack(
        f"""
        import socket

        def attack(ctx):
            if {ranks} and ctx.world_size == 1:
                return  # the scored run: the ranks check comes after it
            outcomes = []
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=5)
                outcomes.append("host tcp connected")
            except OSError as exc:
                outcomes.append(f"host tcp: {{exc.strerror}}")
            for name, family, kind, protocol in [
                ("inet6", socket.AF_INET6, socket.SOCK_STREAM, 0),
                ("vsock", 40, socket.SOCK_STREAM, 0),
                ("packet", socket.AF_PACKET, socket.SOCK_RAW, 0),
                ("netlink audit", socket.AF_NETLINK, socket.SOCK_RAW, 9),
            ]:
                try:
                    socket.socket(family, kind, protocol)
                    outcomes.append(f"{{name}} opened")
                except OSError as exc:
                    outcomes.append(f"{{name}}: errno {{exc.errno}}")
            raise RuntimeError("; ".join(outcomes))
        """,
        **({"config": {"ranks_byte_budget": 4096}, "args": ("--nproc", "2")} if ranks else {}),
    )
    assert not _connection_arrived(tcp_listener)
    status, rule, message = reason(result)
    assert (status, rule) == ("failed", f"{'ranks' if ranks else 'train'}.exception"), message
    assert "host tcp: Connection refused" in message
    for name in ("inet6", "vsock", "packet", "netlink audit"):
        assert f"{name}: errno 97" in message
    assert "opened" not in message and "connected" not in message
    if not ranks:  # the record's isolation block is the trainer's (a failed ranks check has none)
        seccomp = next(layer for layer in result.record["isolation"] if layer["name"] == "seccomp")
        assert seccomp["detail"].endswith("sockets: AF_UNIX, AF_INET and route netlink")
