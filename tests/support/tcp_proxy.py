"""A TCP proxy a test can cut: the network between a resolver and its API server.

`cut()` drops every open connection and refuses new ones (accepted, then closed at once) until
`restore()`: what a watch sees when the network or a load balancer in front of the API server
goes away. TLS passes through untouched (the test kubeconfigs skip verification of the name).
"""

from __future__ import annotations

import trio


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.is_cut = False
        self.connections = 0  # accepted while not cut
        self._scopes: set[trio.CancelScope] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def cut(self) -> None:
        self.is_cut = True
        for scope in list(self._scopes):
            scope.cancel()

    def restore(self) -> None:
        self.is_cut = False

    async def _handle(self, client: trio.SocketStream) -> None:
        if self.is_cut:
            await client.aclose()
            return
        self.connections += 1
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                upstream = await trio.open_tcp_stream(*self.target)
                async with client, upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(_pump, client, upstream, nursery.cancel_scope)
                    nursery.start_soon(_pump, upstream, client, nursery.cancel_scope)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                self._scopes.discard(scope)
        await trio.aclose_forcefully(client)


async def _pump(src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        while data := await src.receive_some(65536):
            await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()
