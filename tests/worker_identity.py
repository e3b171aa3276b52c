"""``[core] hostname_callable`` for the Celery test cluster (tests/celery_cluster.py).

Both workers run on this one machine, so the real host name cannot tell them apart; each
is started with its own ``PGBACKUP_TEST_HOSTNAME``, which Airflow then records as the
``hostname`` of every task instance that worker runs.
"""

from __future__ import annotations

import os
import socket

HOSTNAME_VARIABLE = "PGBACKUP_TEST_HOSTNAME"


def hostname() -> str:
    return os.environ.get(HOSTNAME_VARIABLE) or socket.getfqdn()
