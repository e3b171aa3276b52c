"""What the operator reads: the status structure, storage growth and its projection, sizes as people read them."""
