"""Server processes for `bench/relay.py`, both on the same stack (Starlette under uvicorn, with
uvicorn's defaults: uvloop, httptools, the `websockets` WebSocket implementation, one worker).

    python bench/_relay_server.py tidings PORT   # a Tidings node; settings from TIDINGS_* env
    python bench/_relay_server.py bare PORT      # the bare relay: no storage, auth or franking

The Tidings node is started exactly as `tidings server` starts it (`create_app`, the JSON log
configuration, `tidings.server.serving.uvicorn_config`: no per-message deflate, the frame and
header limits, uvicorn's access log off; the garbage collector paced by
`tidings.server.collector.CollectorPacer`), minus the first-admin console bootstrap, which
prints staff credentials and has nothing to do with messaging.

The bare relay accepts ``/ws/{client_id}``; every text frame it receives is a JSON object with
a ``"to"`` field naming another client id, and it forwards the frame's text unchanged to that
connection (dropped when the target is not connected). That is the least a relay on this stack
can do per message: parse enough to route, then send.
"""

from __future__ import annotations

import cProfile
import json
import os
import signal
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

_connections: dict[str, WebSocket] = {}


async def _relay(ws: WebSocket) -> None:
    client_id = str(ws.path_params["client_id"])
    await ws.accept()
    _connections[client_id] = ws
    try:
        while True:
            text = await ws.receive_text()
            target = _connections.get(str(json.loads(text)["to"]))
            if target is not None:
                await target.send_text(text)
    except WebSocketDisconnect:
        pass
    finally:
        if _connections.get(client_id) is ws:
            del _connections[client_id]


def bare_app() -> Starlette:
    return Starlette(routes=[WebSocketRoute("/ws/{client_id}", _relay)])


def main(argv: list[str]) -> int:
    kind, port = argv[0], int(argv[1])
    if kind == "bare":
        uvicorn.run(bare_app(), host="127.0.0.1", port=port, log_level="warning",
                    access_log=False)
        return 0
    from tidings.app import create_app
    from tidings.server.collector import CollectorPacer
    from tidings.server.config import ServerConfig
    from tidings.server.logs import log_config
    from tidings.server.serving import uvicorn_config

    config = ServerConfig.load().with_overrides(host="127.0.0.1", port=port)
    profile_to = os.environ.get("RELAY_BENCH_CPROFILE")  # analysis only: call counts
    profiler = cProfile.Profile() if profile_to else None
    if profiler is not None:
        # uvicorn re-raises the SIGTERM it handled after shutting down; let that return here.
        signal.signal(signal.SIGTERM, lambda *_: None)
        profiler.enable()
    # The node's own uvicorn settings (tidings.server.serving), as `tidings server` uses them:
    # frame limit, no per-message deflate, header timeout.
    node = uvicorn.Server(
        uvicorn_config(create_app(config), config, log_config=log_config(config.log_level))
    )
    if os.environ.get("RELAY_BENCH_STOCK_GC") != "1":  # analysis only: the stock collector
        CollectorPacer().install()
    node.run()
    if profiler is not None and profile_to:
        profiler.disable()
        profiler.dump_stats(f"{profile_to}.{os.getpid()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
