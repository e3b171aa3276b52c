"""Where backups are kept: the store protocol the catalog and retention read through, the local store, scratch folders.

The remote store is the rclone client (:mod:`rclone_provider.client`), which has the same surface."""
