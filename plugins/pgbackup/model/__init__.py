"""The backup model: manifests (the commit marker of a backup), the layout of a remote, the catalog read from it.

Pure data and the rules between backups; the storage protocol is the only thing it reads through."""
