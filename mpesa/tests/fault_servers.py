"""Real TCP servers for the fault tests: a Daraja that answers too late."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


class SlowDaraja(ThreadingHTTPServer):
    """A proxy in front of the simulator that holds back Daraja's answers on some paths: the request
    reaches Daraja and is acted on at once; only the answer is late (a congested gateway)."""

    daemon_threads = True

    def __init__(self, target: str, delays: dict[str, float]):
        super().__init__(("127.0.0.1", 0), _Forward)
        self.target, self.delays, self.forwarded = target.rstrip("/"), delays, []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for forwarded in self.forwarded if forwarded == path)

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Forward(BaseHTTPRequestHandler):
    def _serve(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?")[0]
        with self.server.lock:
            self.server.forwarded.append(path)
        headers = {name: value for name, value in self.headers.items()
                   if name.lower() in ("authorization", "content-type")}
        answer = requests.request(self.command, self.server.target + self.path, data=body or None, headers=headers,
                                  timeout=30)
        time.sleep(self.server.delays.get(path, 0))
        try:
            self.send_response(answer.status_code)
            self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting: the point of this server

    do_GET = do_POST = _serve

    def log_message(self, *args):
        pass
