"""Learns the exit status of any process, whoever reaps it (Linux 6.15's PIDFD_INFO_EXIT):
    python3 exit_status_of.py PID OUT

Opens a pidfd for PID, appends "watching PID" to OUT, waits for the process to end and to
be reaped by its parent, and appends "status S" (the wait status, as waitpid gives it), or
"unknown ..." when the kernel gives none within 60 s.
"""
import fcntl
import os
import select
import struct
import sys
import time

# _IOWR(0xFF, 11, struct pidfd_info) for the 64-byte struct; PIDFD_INFO_EXIT = 1 << 3.
PIDFD_GET_INFO = (3 << 30) | (64 << 16) | (0xFF << 8) | 11
PIDFD_INFO_EXIT = 1 << 3


def say(out, line):
    with open(out, "a") as f:
        f.write(line + "\n")


def main():
    pid, out = int(sys.argv[1]), sys.argv[2]
    fd = os.pidfd_open(pid)
    say(out, f"watching {pid}")
    p = select.poll()
    p.register(fd, select.POLLIN)
    p.poll()
    end = time.monotonic() + 60
    while time.monotonic() < end:
        buf = bytearray(64)
        struct.pack_into("Q", buf, 0, PIDFD_INFO_EXIT)
        try:
            fcntl.ioctl(fd, PIDFD_GET_INFO, buf)
        except OSError as e:
            say(out, f"unknown: {e}")
            return
        if struct.unpack_from("Q", buf, 0)[0] & PIDFD_INFO_EXIT:
            say(out, f"status {struct.unpack_from('i', buf, 60)[0]}")
            return
        time.sleep(0.05)
    say(out, "unknown: not reaped")


main()
