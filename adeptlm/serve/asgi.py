"""uvicorn on a socket bound up front, for `adept serve` and `adept arena`.

The socket is bound when the server object is made, so port 0 (any free port) is known before
serving starts and a caller can print or test it without racing another process for a port.
uvicorn runs the app: HTTP/1.1 keep-alive and pipelining, idle connections closed after
`keep_alive` seconds, at most `max_connections` at once (more are answered 503), access log off
(the console shows what adept prints, not a line per request).
"""

from __future__ import annotations

import socket
import threading

import uvicorn


class HttpServer:
    def __init__(self, app, host: str, port: int, max_connections: int = 1024, keep_alive: float = 5.0):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, port), family=family, backlog=2048)
        # log_config None: uvicorn leaves logging as it is (no dictConfig of its own); its warnings and
        # an app's tracebacks still reach stderr through the root logger's last-resort handler
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                                limit_concurrency=max_connections, timeout_keep_alive=keep_alive,
                                timeout_graceful_shutdown=3)
        self.server = uvicorn.Server(config)
        self.stopped = threading.Event()
        self.started = False

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def serve_forever(self) -> None:
        """Serves until shutdown() or, on the main thread, SIGINT/SIGTERM (uvicorn re-raises the signal
        after a graceful stop, so Ctrl-C still ends the caller with KeyboardInterrupt)."""
        self.started = True
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.stopped.set()
            self.sock.close()

    def shutdown(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self.started:
            self.stopped.wait(timeout)
        else:
            self.sock.close()
