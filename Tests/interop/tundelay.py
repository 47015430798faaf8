"""Delays every packet routed into a TUN device by a fixed time, then hands it back to the kernel.

    tundelay.py IFNAME DELAY_MS

This kernel has no netem (`../shared/reference/facts.md`), so a lab adds delay this way: a router
namespace routes one direction of a link into the TUN device (policy routing, rp_filter off), this
program reads each packet and writes it back DELAY_MS later, and the kernel forwards it by its main
table. Creates IFNAME itself (not persistent: it disappears when this process ends) and prints
"ready" once it exists. Stops on SIGTERM. Holds at most MAX_QUEUED packets; more are dropped, as a
full queue would.
"""

from __future__ import annotations

import collections
import fcntl
import math
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_QUEUED = 10_000


def main() -> None:
    name, delay = sys.argv[1], float(sys.argv[2]) / 1000.0
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    print("ready", flush=True)
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        timeout = None if not queue else max(0, math.ceil((queue[0][0] - time.monotonic()) * 1000))
        if poller.poll(timeout):
            while True:
                try:
                    packet = os.read(fd, 65535)
                except BlockingIOError:
                    break
                if len(queue) < MAX_QUEUED:
                    queue.append((time.monotonic() + delay, packet))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            try:
                os.write(fd, queue.popleft()[1])
            except OSError:
                pass  # the kernel refused one packet (no route, say): it is lost, like on a wire


if __name__ == "__main__":
    main()
