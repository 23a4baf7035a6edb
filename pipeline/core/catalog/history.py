"""The catalog's history as people read it (GET /v1/catalog/history, `catalog_cli history`): each version's audit
record (pipeline.core.catalog.store) told as what changed, which product, who (the operator's name and address, as
the ingress recorded them) and when."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline.core.catalog.match import HistoryEntry


def timestamp(seconds: float | None) -> str | None:
    """ISO 8601, UTC, to the second."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def photos(count: int) -> str:
    return f"{count} photo" + ("" if count == 1 else "s")


def names(skus: set[str], most: int = 5) -> str:
    """Some skus, in order, and how many more."""
    listed = sorted(skus)
    return ", ".join(listed[:most]) + (f" and {len(listed) - most} more" if len(listed) > most else "")


def change(action: str, sku: str | None, details: dict[str, Any]) -> str:
    """One line that says what the write did."""
    added, removed = details.get("photo_ids", []), details.get("replaced_photo_ids", [])
    if action == "replace":
        return f"replaced {sku}'s {photos(len(removed))} with {len(added)} ({details.get('label')})"
    if action == "enroll":
        return f"enrolled {sku} ({details.get('label')}) with {photos(len(added))}"
    if action == "add_photos":
        return f"added {photos(len(added))} to {sku}"
    if action == "remove_photo":
        return f"removed photo {', '.join(map(str, details.get('removed_photo_ids', [])))} of {sku}"
    if action == "precedence":
        return precedence_change(sku, details.get("previous", []), details.get("precedence", []))
    if action == "delete":
        return f"deleted {sku} ({photos(len(added))})"
    if action == "rollback":
        restored, removed = set(details.get("restored", [])), set(details.get("removed", []))
        parts = [f"{names(restored & removed)} as then" if restored & removed else "",
                 f"{names(restored - removed)} back" if restored - removed else "",
                 f"{names(removed - restored)} taken out" if removed - restored else ""]
        return f"rolled back to version {details.get('to_version')}: " + ("; ".join(p for p in parts if p) or "no change")
    if action == "reembed":
        return f"re-embedded {photos(details.get('embedded', 0))} for {details.get('model_version')}"
    return action


def precedence_change(sku: str | None, previous: list[str], now: list[str]) -> str:
    """What a precedence write did: the classes the product now takes precedence over, those it no longer does."""
    gained, lost = set(now) - set(previous), set(previous) - set(now)
    parts = [f"{sku} now takes precedence over {classes(gained)}" if gained else "",
             f"{sku} no longer takes precedence over {classes(lost)}" if lost else ""]
    return "; ".join(part for part in parts if part) or f"{sku}'s precedence unchanged"


def classes(labels: set[str], most: int = 5) -> str:
    """Trained class labels, quoted (they may end in spaces), in order, and how many more."""
    listed = sorted(labels)
    quoted = ", ".join(f"'{label}'" for label in listed[:most])
    return quoted + (f" and {len(listed) - most} more" if len(listed) > most else "")


def history_entry(entry: HistoryEntry) -> dict[str, Any]:
    """One version as JSON (the HTTP body is deployments.schemas.CatalogVersion). An enrollment that replaced a product's
    photos is told as `replace`; the actor `name@address` (deployments/catalog/http_side.py) is split in two."""
    details = entry.details
    action = "replace" if entry.action == "enroll" and details.get("replaced_photo_ids") else entry.action
    operator, at, address = entry.actor.rpartition("@")
    removed = details.get("replaced_photo_ids", []) + details.get("removed_photo_ids", [])
    return {"version": entry.version, "time": timestamp(entry.time), "action": action, "sku": entry.sku,
            "label": details.get("label"), "change": change(action, entry.sku, details),
            "operator": operator if at else entry.actor, "address": address if at else None,
            "added_photo_ids": details.get("photo_ids", []) if action != "delete" else [],
            "removed_photo_ids": details.get("photo_ids", []) if action == "delete" else removed,
            "to_version": details.get("to_version")}
