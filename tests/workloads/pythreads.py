"""pythreads.py STATEDIR: CPython with several threads sharing a lock and a condition.

Four workers append to their own counters under one lock; the main thread ticks the log and,
on SIGUSR1, checks every worker moved and their total equals the shared counter.
"""
import os
import signal
import sys
import threading
import time

state = sys.argv[1]
status = open(os.path.join(state, "status"), "a", buffering=1)
log = open(os.path.join(state, "log"), "a", buffering=1)
lock = threading.Lock()
counts = [0] * 4
total = [0]
check = threading.Event()


def worker(i):
    while True:
        with lock:
            counts[i] += 1
            total[0] += 1
        time.sleep(0.002 * (i + 1))


for i in range(4):
    threading.Thread(target=worker, args=(i,), daemon=True).start()
signal.signal(signal.SIGUSR1, lambda *_: check.set())
status.write("ready pid=%d\n" % os.getpid())
tick = 0
while True:
    tick += 1
    log.write("tick %d\n" % tick)
    if check.wait(0.02):
        check.clear()
        before = list(counts)
        time.sleep(0.2)
        with lock:
            consistent = sum(counts) == total[0]
        moved = all(a > b for a, b in zip(counts, before))
        threads = len(os.listdir("/proc/self/task"))
        word = "ok" if consistent and moved else "BAD"
        status.write("%s threads=%d pid=%d moved=%s consistent=%s\n" % (word, threads, os.getpid(), moved, consistent))
