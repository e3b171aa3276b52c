"""Decisions over the catalog, as pure functions with a reason for each: retention (what to keep and delete) and
staleness (is the newest backup recent enough)."""
