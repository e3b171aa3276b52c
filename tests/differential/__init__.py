"""Randomized differential test of backup and restore: Hypothesis generates operations on a real source
database interleaved with full and incremental backups; every restored point must equal this test's own
fingerprint of the source at that point, or the restore must refuse."""
