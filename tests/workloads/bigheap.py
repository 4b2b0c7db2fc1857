"""A Python victim with a large heap: a 300 MiB bytearray and a list of two million ints.

Usage: python3 bigheap.py STATEDIR. Writes "ready pid=P sha=H" to STATEDIR/status, then
"tick N" lines to STATEDIR/log. On SIGUSR1 it hashes its memory again and appends
"ok pid=P sha=H counter=N" (or "BAD ...") to the status file.
"""

import hashlib
import os
import random
import signal
import sys
import time

state = sys.argv[1]
status = open(os.path.join(state, "status"), "a", buffering=1)
log = open(os.path.join(state, "log"), "a", buffering=1)

rng = random.Random(20240611)
block = rng.randbytes(1 << 20)
heap = bytearray()
for i in range(300):
    # Vary every block so that the image cannot deduplicate them; leave some pages zero.
    heap += block[i:] + block[:i] if i % 5 else bytes(1 << 20)
ints = list(range(2_000_000))


def digest():
    h = hashlib.sha256(heap)
    h.update(str(sum(ints)).encode())
    return h.hexdigest()


expected = digest()
requested = False


def on_usr1(signum, frame):
    global requested
    requested = True


signal.signal(signal.SIGUSR1, on_usr1)
status.write(f"ready pid={os.getpid()} sha={expected}\n")
counter = 0
while True:
    if requested:
        requested = False
        got = digest()
        if got == expected:
            status.write(f"ok pid={os.getpid()} sha={got} counter={counter}\n")
        else:
            status.write(f"BAD sha={got} expected={expected}\n")
    counter += 1
    log.write(f"tick {counter}\n")
    time.sleep(0.02)
