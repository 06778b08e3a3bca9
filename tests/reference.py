"""A deliberately simple, independent implementation of configs/summary.md,
for golden tests.

Dicts and sorted lists, `json.loads` per line: slow, obviously right, shares no
code with the pipeline.
"""
from __future__ import annotations

import json
import math

STATUSES = ("online", "offline")


def _nonempty_str(v: object) -> bool:
    return isinstance(v, str) and v != ""


def parse(line: bytes) -> dict | None:
    """The record if the line is valid, else None. Blank lines also give None."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None

    def no_constants(name: str) -> float:
        raise ValueError(name)

    try:
        rec = json.loads(text, parse_constant=no_constants)
    except ValueError:
        return None
    if not isinstance(rec, dict):
        return None
    if not (_nonempty_str(rec.get("id")) and _nonempty_str(rec.get("from"))):
        return None
    site = rec.get("site_id")
    if isinstance(site, bool) or not (_nonempty_str(site) or isinstance(site, int)):
        return None
    ts = rec.get("timestamp")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return None
    try:
        ts = float(ts)
    except OverflowError:
        return None
    if not math.isfinite(ts):
        return None
    if rec.get("type") == "status":
        data = rec.get("data")
        if not isinstance(data, dict) or data.get("status") not in STATUSES:
            return None
    elif rec.get("type") != "message":
        return None
    return {"id": rec["id"], "from": rec["from"], "site": str(site), "ts": ts,
            "type": rec["type"], "status": (rec.get("data") or {}).get("status")}


def summarize(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    seen = set()
    records = []
    for pos, line in enumerate(data.split(b"\n")):
        rec = parse(line)
        if rec is None or rec["id"] in seen:
            continue
        seen.add(rec["id"])
        rec["pos"] = pos
        records.append(rec)
    sites: dict[str, dict] = {}
    for r in records:
        s = sites.setdefault(r["site"], {"chats": 0, "emails": 0, "ops": set(),
                                         "visitors": set()})
        (s["ops"] if r["type"] == "status" else s["visitors"]).add(r["from"])
    # statuses before messages at equal times, then file order
    events = sorted(records, key=lambda r: (r["ts"], r["type"] == "message", r["pos"]))
    online: dict[tuple[str, str], bool] = {}
    for r in events:
        if r["type"] == "status":
            online[(r["site"], r["from"])] = r["status"] == "online"
        elif any(v for (site, _), v in online.items() if site == r["site"]):
            sites[r["site"]]["chats"] += 1
        else:
            sites[r["site"]]["emails"] += 1
    return "".join(
        f"{k},messages={s['chats']},emails={s['emails']},operators={len(s['ops'])},"
        f"visitors={len(s['visitors'])}\n" for k, s in sorted(sites.items()))
