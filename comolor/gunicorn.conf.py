"""gunicorn settings for production (README, Production deployment):

    gunicorn comolor.wsgi -c comolor/gunicorn.conf.py --bind 127.0.0.1:8000

Options on the command line override these. bench/bench_callbacks.py runs the app with this file.
"""

import os

# Threads as well as processes: a till's STK push waits up to MPESA_READ_TIMEOUT on Daraja, and each
# callback is applied after its answer is sent (mpesa.views), both in the thread that took them;
# meanwhile the process's other threads keep answering. Two processes per core with two threads each,
# rather than one with four: a process runs one thread's Python at a time, and on two cores this
# took 370-390 callbacks/s where one process per core took 250-350 (bench/bench_callbacks.py).
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * (os.cpu_count() or 1)))
threads = int(os.environ.get("GUNICORN_THREADS", 2))
# The proxy and the tills' browsers reuse connections; an idle one is closed after this many seconds.
keepalive = 5
# On a restart (a deploy), requests in flight get this long to finish: a push may wait
# MPESA_CONNECT_TIMEOUT + MPESA_READ_TIMEOUT (35 s) on Daraja. A callback answered but not yet
# applied when its worker goes is applied by the sweep.
graceful_timeout = 40
# Django is loaded once, before the workers fork: they start fast and share that memory. A deploy
# therefore restarts the service (a HUP would keep the old code).
preload_app = True
