"""Sizes as people read them, shared by the CLI and the Backups page."""


def human_bytes(n: int | float | None) -> str:
    """``1536`` → ``1.5 KiB``; ``None`` → ``-``."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
