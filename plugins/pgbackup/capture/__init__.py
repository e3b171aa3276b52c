"""Taking a backup: the full (pg_dump through zstd and sha256), the incremental (row-key state and the delta
format), and the archive check that proves what was written can be read back."""
