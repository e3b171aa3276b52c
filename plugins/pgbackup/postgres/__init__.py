"""Reaching PostgreSQL: a target server and its client tools, one exported snapshot, the tables and their
fingerprints, relation naming, the source's identity, and an embedded server for machines that have none."""
