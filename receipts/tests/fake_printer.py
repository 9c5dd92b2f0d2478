"""A real TCP listener on loopback standing in for a network receipt printer (raw port 9100)."""

import os
import socket
import threading

# Ports 9161-9169 are set aside for this app's tests: three per pytest-xdist worker (gw0-gw2).
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 3
PRINTER_PORT, DEAD_PORT, STUCK_PORT = (9161 + 3 * _WORKER + offset for offset in range(3))


class FakePrinter:
    """Accepts one job at a time. `reads=True`: takes the bytes until the sender closes, then closes
    (as a printer does). `reads=False`: accepts and never reads - a printer out of paper."""

    def __init__(self, port: int, *, reads: bool = True):
        self.port = port
        self.reads = reads
        self.jobs: list[bytes] = []
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", port))
        self._server.listen(4)
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._server.close()
        for connection in self._held:
            connection.close()
        self._thread.join(timeout=5)

    def _serve(self):
        self._server.settimeout(0.05)
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            if not self.reads:
                self._held.append(connection)
                continue
            data = bytearray()
            with connection:
                connection.settimeout(5)
                try:
                    while chunk := connection.recv(65536):
                        data.extend(chunk)
                except OSError:
                    continue  # the sender gave up half-way: no job, as on a real printer
            self.jobs.append(bytes(data))
