"""Health check of a trainer machine or container: `python -m trainers.health` exits 0 when a
trainer on this host has sent a heartbeat that has not expired, 1 otherwise (and says why).

For orchestrators (compose's healthcheck of the trainer service): a trainer that is hung, or
cannot reach the job store, stops beating and turns unhealthy.
"""

from __future__ import annotations

import socket
import sys


def main() -> int:
    host = socket.gethostname()
    try:
        # Opening the job store already talks to it (a Redis store indexes old records on open).
        from trainers.queue import jobs

        live = sorted(worker for worker in jobs.live_workers() if worker.rsplit(":", 1)[0] == host)
    except Exception as error:  # the job store unreachable is unhealthy too
        print(f"unhealthy: cannot read heartbeats: {type(error).__name__}: {error}")
        return 1
    if not live:
        print(f"unhealthy: no live trainer heartbeat from {host}")
        return 1
    print(f"healthy: {', '.join(live)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
