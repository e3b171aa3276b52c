"""Putting a backup point back: the chain (a full with pg_restore, then each incremental applied), the check that
the target is exact or the restore refuses, the drill that measures it, and leases that keep its backups alive."""
