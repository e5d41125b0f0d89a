"""Shared by the kill -9 tests: run a writer script, kill it at a random moment, read what it acknowledged.

The writer is `python -c SCRIPT PATH START`; it prints "begin OP I" before each write and "ack OP I"
after it returns, flushing each line."""
import random
import signal
import subprocess
import sys
import time
from typing import Optional


def kill_writer_at_random(script: str, path: str, start: int, rnd: random.Random, max_delay: float):
    """Returns (acknowledged [(op, i), ...] in order, the (op, i) in flight at the kill or None)."""
    proc = subprocess.Popen([sys.executable, "-c", script, path, str(start)], stdout=subprocess.PIPE, text=True)
    # Start the clock at its first write (start-up time varies, e.g. under ASan), then kill at a
    # random moment.
    first = proc.stdout.readline()
    time.sleep(rnd.random() * max_delay)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    acked = []
    in_flight: Optional[tuple] = None
    for line in (first + out).splitlines():
        word, op, i = line.split()
        if word == "begin":
            in_flight = (int(op), int(i))
        else:
            acked.append((int(op), int(i)))
            in_flight = None
    return acked, in_flight
