"""Where ``child_process`` used to live: it is now ``rclone_provider.child_process``.

The rclone provider must depend on nothing of this project, and the backup library
already stands on the provider's client, so the one process-group module moved into
the provider.  This name stays only until every caller imports the new one.
"""

from rclone_provider.child_process import ChildProcess, ChildRegistry, ProcessCancelled, StopsChildrenOnKill

__all__ = ["ChildProcess", "ChildRegistry", "ProcessCancelled", "StopsChildrenOnKill"]
