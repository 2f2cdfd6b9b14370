"""A peer lost under the torch backend is named as such (one paragraph), not a traceback."""

import pytest

from hpccl.core.backends import _peer_failures
from hpccl.core.errors import PeerLost

GLOO = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed "
        "by peer [10.213.0.1]:62337. This is typically caused by a remote worker crashing.")


def test_a_closed_connection_is_a_lost_peer():
    with pytest.raises(PeerLost, match=r"lost another rank: Connection closed by peer \[10.213.0.1\]"):
        with _peer_failures():
            raise RuntimeError(GLOO)


def test_other_runtime_errors_keep_their_traceback():
    with pytest.raises(RuntimeError, match="size mismatch") as info:
        with _peer_failures():
            raise RuntimeError("size mismatch")
    assert not isinstance(info.value, PeerLost)
