"""The Backups page's charts: each backup's size and the remote's running total over time, and the storage projection.

Pure SVG text from the status report's rows (no Airflow, no FastAPI), so it is
tested directly; the page embeds it as it is.
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pgbackup.report.humanize import human_bytes
from pgbackup_airflow.ui_view import local_time, parse_iso

KIND_COLORS = {"full": "#1d4ed8", "incremental": "#60a5fa"}


def _nice_ceiling(value: float) -> float:
    """The smallest 1/2/2.5/5 × 2^10k-ish round number ≥ value, for axis tops."""
    if value <= 0:
        return 1.0
    unit = 1.0
    while value > unit * 1024 and unit < 1024 ** 4:
        unit *= 1024
    scaled = value / unit
    magnitude = 10 ** (len(str(int(scaled))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if scaled <= step * magnitude:
            return step * magnitude * unit
    return 10 * magnitude * unit


TICK_STEPS = [timedelta(hours=h) for h in (1, 2, 3, 6, 12)] + [timedelta(days=d) for d in (1, 2, 7, 14, 28, 56, 91, 182, 364)]


def time_ticks(start: datetime, end: datetime, zone: ZoneInfo, most: int = 8) -> list[tuple[datetime, str]]:
    """Round local times between ``start`` and ``end`` (at most ``most``), each with its label."""
    span = end - start
    step = next((s for s in TICK_STEPS if span / s <= most), TICK_STEPS[-1])
    local = start.astimezone(zone)
    if step < timedelta(days=1):
        hours = int(step.total_seconds() // 3600)
        tick = local.replace(hour=local.hour // hours * hours, minute=0, second=0, microsecond=0)
    else:
        tick = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if step >= timedelta(days=7):  # weeks start on Mondays
            tick -= timedelta(days=tick.weekday())
    ticks = []
    while tick <= end:
        if tick >= start:
            if step < timedelta(days=1):
                label = tick.strftime("%b %d") if tick.hour == 0 else tick.strftime("%H:%M")
            else:
                label = tick.strftime("%Y-%m-%d" if span > timedelta(days=400) else "%b %d")
            ticks.append((tick, label))
        tick = (tick + step).astimezone(zone)
    return ticks


def storage_chart_svg(backups: list[dict[str, Any]], now: datetime, tz: str, *, width: int = 960) -> str:
    """Two panels sharing a time axis: each backup's size (bars), and the bytes on the remote (step line).

    ``backups`` are the catalog rows of ``collect_status`` (``finished_at``, ``bytes``, ``kind``, ``id``).
    The storage line is the running total of the backups stored now, by the time each was written:
    what retention deleted earlier is no longer known, so the line shows today's holdings building up.
    """
    esc = html.escape
    rows = sorted((b for b in backups if b.get("finished_at")), key=lambda b: b["finished_at"])
    if not rows:
        return ('<svg class="chart" role="img" aria-label="No backups yet" viewBox="0 0 %d 60" width="100%%">'
                '<text x="%d" y="35" text-anchor="middle" class="muted">No backups yet: nothing to chart.</text></svg>'
                % (width, width // 2))
    zone = ZoneInfo(tz)
    times = [parse_iso(b["finished_at"]) for b in rows]
    start, end = min(times), max(max(times), now)
    if end - start < timedelta(hours=12):
        start -= timedelta(hours=6)
        end += timedelta(hours=6)
    pad = (end - start) * 0.03
    start, end = start - pad, end + pad
    left, right, top, panel, gap, axis = 78, 24, 26, 130, 46, 26
    plot_w = width - left - right
    height = top + panel + gap + panel + axis

    def x(moment: datetime) -> float:
        return left + plot_w * (moment - start).total_seconds() / (end - start).total_seconds()

    out = [f'<svg class="chart" role="img" aria-label="Backup size and remote storage over time" '
           f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" '
           f'xmlns="http://www.w3.org/2000/svg">']

    def frame(y0: int, title: str, top_value: float) -> None:
        out.append(f'<text x="{left}" y="{y0 - 8}" class="chart-title">{esc(title)}</text>')
        for fraction in (0, 0.5, 1):
            y = y0 + panel - panel * fraction
            out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{esc(human_bytes(top_value * fraction))}</text>')

    # panel 1: one bar per backup
    sizes_top = _nice_ceiling(max(b["bytes"] for b in rows))
    frame(top, "Size of each backup", sizes_top)
    bar_w = max(2.0, min(14.0, plot_w / max(len(rows), 1) * 0.6))
    for b, moment in zip(rows, times):
        h = max(1.0, panel * b["bytes"] / sizes_top)
        cx = x(moment)
        out.append(
            f'<rect x="{cx - bar_w / 2:.1f}" y="{top + panel - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
            f'fill="{KIND_COLORS.get(b["kind"], "#888")}" class="bar bar-{esc(b["kind"])}">'
            f'<title>{esc(b["id"])}: {esc(b["kind"])}, {esc(human_bytes(b["bytes"]))}, '
            f'{esc(local_time(b["finished_at"], tz))}</title></rect>'
        )

    # panel 2: running total on the remote
    y2 = top + panel + gap
    total, points = 0, []
    for b, moment in zip(rows, times):
        points.append((x(moment), total))
        total += b["bytes"]
        points.append((x(moment), total))
    points.append((x(max(now, times[-1])), total))
    storage_top = _nice_ceiling(total)
    frame(y2, "Stored on the remote (running total of the backups kept now)", storage_top)

    def yv(value: float) -> float:
        return y2 + panel - panel * value / storage_top

    line = " ".join(f"{px:.1f},{yv(v):.1f}" for px, v in points)
    area = f"{points[0][0]:.1f},{y2 + panel} {line} {points[-1][0]:.1f},{y2 + panel}"
    out.append(f'<polygon points="{area}" class="area"/>')
    out.append(f'<polyline points="{line}" class="line"><title>{esc(human_bytes(total))} stored now</title></polyline>')
    out.append(f'<circle cx="{points[-1][0]:.1f}" cy="{yv(total):.1f}" r="3.5" class="dot"/>')
    out.append(f'<text x="{points[-1][0] - 6:.1f}" y="{yv(total) - 8:.1f}" text-anchor="end" class="tick strong">{esc(human_bytes(total))}</text>')

    # shared time axis, ticks on round local times
    axis_y = y2 + panel
    for moment, label in time_ticks(start, end, zone):
        px = x(moment)
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{axis_y}" y2="{axis_y + 4}" class="grid"/>')
        tx = min(max(px, left + 18), left + plot_w - 18)
        out.append(f'<text x="{tx:.1f}" y="{axis_y + 17}" text-anchor="middle" class="tick">{esc(label)}</text>')
    now_x = x(now)
    for y0 in (top, y2):
        out.append(f'<line x1="{now_x:.1f}" x2="{now_x:.1f}" y1="{y0}" y2="{y0 + panel}" class="now"><title>now</title></line>')

    # legend
    lx = left + plot_w - 250
    for i, (kind, color) in enumerate(KIND_COLORS.items()):
        out.append(f'<rect x="{lx + i * 110}" y="{top - 19}" width="11" height="11" fill="{color}"/>'
                   f'<text x="{lx + i * 110 + 16}" y="{top - 9}" class="tick">{kind}</text>')
    out.append("</svg>")
    return "".join(out)


def growth_chart_svg(growth: dict[str, Any] | None, *, width: int = 960) -> str:
    """Stored bytes per week so far (bars) and the 12 months' projection under retention (line), against the quota (dashed).

    ``growth`` is ``pgbackup.report.growth.GrowthReport.to_dict()`` as ``collect_status`` reports it.
    """
    esc = html.escape
    if not growth or growth.get("reason") or not growth.get("months"):
        reason = (growth or {}).get("reason") or "no backups yet"
        return ('<svg class="chart growth" role="img" aria-label="No projection" viewBox="0 0 %d 60" width="100%%">'
                '<text x="%d" y="35" text-anchor="middle" class="muted">Storage projection: %s.</text></svg>'
                % (width, width // 2, esc(reason)))
    weeks, months = growth["weeks"], growth["months"]
    quota = growth.get("quota_total")
    left, right, top, height_plot, axis = 78, 24, 26, 170, 26
    plot_w, height = width - left - right, top + height_plot + axis
    # a slot per past week, then a slot per projected month
    slots = len(weeks) + len(months)
    slot_w = plot_w / max(slots, 1)
    peak = max([w["stored_bytes"] for w in weeks] + [m["stored_bytes"] + growth.get("other_used", 0) for m in months] + [1])
    scale_max = max(peak, quota or 0) if quota and quota < peak * 4 else peak
    base = top + height_plot

    def y(value: float) -> float:
        return base - height_plot * min(value / scale_max, 1.0)

    out = [f'<svg class="chart growth" role="img" aria-label="Storage per week and the 12-month projection" '
           f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="{left}" y="{top - 9}" class="chart-title">Stored per week, and projected for {len(months)} months</text>',
           f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" class="tick">{esc(human_bytes(round(scale_max)))}</text>',
           f'<line x1="{left}" x2="{left + plot_w}" y1="{base}" y2="{base}" class="grid"/>']
    for i, w in enumerate(weeks):
        h = base - y(w["stored_bytes"])
        out.append(f'<rect class="week-bar" x="{left + i * slot_w + 1:.1f}" y="{base - h:.1f}" width="{max(slot_w - 2, 1):.1f}" height="{h:.1f}" '
                   f'fill="{KIND_COLORS["full"]}"><title>week of {esc(w["week"])}: {esc(human_bytes(w["stored_bytes"]))} stored, '
                   f'{esc(human_bytes(w["added_bytes"]))} added</title></rect>')
    points = [(left + (len(weeks) + i + 0.5) * slot_w, y(m["stored_bytes"])) for i, m in enumerate(months)]
    out.append('<polyline class="line projection" points="%s"/>' % " ".join(f"{px:.1f},{py:.1f}" for px, py in points))
    for (px, py), m in zip(points, months):
        out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" class="point"><title>month {m["month"]} ({esc(m["at"][:10])}): '
                   f'{esc(human_bytes(m["stored_bytes"]))}</title></circle>')
    last = months[-1]
    out.append(f'<text x="{points[-1][0]:.1f}" y="{points[-1][1] - 8:.1f}" text-anchor="end" class="strong">'
               f'{esc(human_bytes(last["stored_bytes"]))} in {last["month"]} months</text>')
    if quota and quota <= scale_max:
        qy = y(quota)
        out.append(f'<line class="quota" x1="{left}" x2="{left + plot_w}" y1="{qy:.1f}" y2="{qy:.1f}" stroke="#c0392b" stroke-dasharray="6 4">'
                   f'<title>quota {esc(human_bytes(quota))}</title></line>')
    outgrown = f", outgrown by {growth['over_quota_at'][:10]}" if growth.get("over_quota_at") else ""
    label = f"quota {human_bytes(quota)}{outgrown}" if quota else "quota unknown"
    out.append(f'<text x="{left + plot_w}" y="{base + 18}" text-anchor="end" class="tick">{esc(label)}</text>')
    out.append(f'<text x="{left}" y="{base + 18}" class="tick">{esc(weeks[0]["week"]) if weeks else ""}</text>')
    out.append("</svg>")
    return "".join(out)
