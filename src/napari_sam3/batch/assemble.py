"""Run-level files, written at the end of every run and MERGED with what the folder already holds.

A run over a subset of a folder's images keeps the rows of the other images: the previous run
manifest's entries whose stem this run did not touch are kept, this run's entries replace the ones
with the same stem. COCO (``coco.json``) and the pairs manifest are rebuilt from every *done*
completion record in the folder, so they list every image whose outputs are there. The run manifest
is written last, with the size and SHA-256 of the other run files (`runner.check_run_files` uses
them to tell our files from a user's).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from napari_sam3.batch import records
from napari_sam3.batch.runner import BatchReport, run_file_digests
from napari_sam3.io.atomic import write_json
from napari_sam3.io.coco import merge_coco
from napari_sam3.io.manifest import now_iso, package_versions
from napari_sam3.io.pairs import pair_entry, update_pairs_manifest
from napari_sam3.io.tables import write_table_csv

ENTRY_KEYS = ("stem", "source", "slice", "status", "count", "error")
# classical count only (left out when absent): the diameter each plane was counted at, where it
# came from (given / file: one per multi-plane file / plane) and the count's warnings
COUNT_KEYS = ("diameter", "diameter_source", "polarity", "warnings")
TRACK_KEYS = ("stem", "source", "slice", "status", "frames", "tracks", "error")


def previous_entries(out: Path, manifest: str, tool: str, key: str) -> list[dict]:
    """The entry list of the folder's run manifest when ours (else none)."""
    try:
        doc = json.loads((out / manifest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(doc, dict) or doc.get("tool") != tool:
        return []
    return [e for e in doc.get(key) or [] if isinstance(e, dict) and "stem" in e]


def merge_entries(previous: list[dict], current: list[dict]) -> list[dict]:
    """``current`` plus the ``previous`` entries of stems it does not have; by (source, stem)."""
    mine = {e["stem"] for e in current}
    kept = [e for e in previous if e["stem"] not in mine]
    return sorted(kept + current, key=lambda e: (str(e.get("source")), str(e["stem"])))


def open_run_files(out: Path, cmd) -> None:
    """Before rewriting the run files: drop their digests from our manifest, so that a run killed
    half-way through assembling does not make the next run take its own files for a user's."""
    path = out / cmd.manifest
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(doc, dict) and doc.get("tool") == cmd.tool and doc.get("run_files"):
        write_json(path, {**doc, "run_files": None}, overwrite=True)


def done_records(out: Path) -> dict[str, dict]:
    """Every done completion record of the folder, by record name."""
    found = {}
    for path in sorted((out / records.DONE_DIR).glob("*.json")):
        rec = records.read_record(out, path.stem)
        if rec is not None and rec.get("status") == "done":
            found[path.stem] = rec
    return found


def _entries(report: BatchReport, keys: tuple[str, ...], optional=()) -> list[dict]:
    def entry(r) -> dict:
        extra = {k: r.get(k) for k in optional if r.get(k) is not None}
        return {**{k: r.get(k) for k in keys}, **extra}

    return [entry(r) for r in report.results]


def write_manifest(out, cmd, report, argv, settings: dict, entries, key, summary_key, extra=()):
    c = report.counts
    manifest = {
        "tool": cmd.tool,
        "command": argv,
        "settings": settings,
        "fingerprint": cmd.fingerprint,
        "versions": package_versions(),
        "date": now_iso(),
        "seconds": round(report.seconds, 3),
        "summary": {
            summary_key: len(report.results),
            "done": c["done"],
            "skipped": c["skipped"],
            "failed": len(report.failures),
        },
        "fatal": report.fatal,
        key: entries,
        "input_problems": [{"input": i, "error": why} for i, why in report.input_problems],
        "run_files": run_file_digests(out, [n for n in cmd.run_files() if n != cmd.manifest]),
        **dict(extra),
    }
    write_json(out / cmd.manifest, manifest, overwrite=True)


def assemble_planes(out: Path, cmd, report: BatchReport, argv, settings: dict) -> None:
    """``counts.csv``, ``coco.json``, ``pairs/manifest.json`` and ``manifest.json``."""
    entries = merge_entries(
        previous_entries(out, cmd.manifest, cmd.tool, "images"),
        _entries(report, ENTRY_KEYS, COUNT_KEYS),
    )
    recs = done_records(out)
    open_run_files(out, cmd)
    formats = settings.get("formats", ())
    if "coco" in formats:
        parts = []
        for stem, rec in recs.items():
            if "coco_part" not in rec.get("outputs", {}):
                continue
            try:
                parts.append(json.loads((out / ".parts" / f"{stem}.coco.json").read_text("utf-8")))
            except (OSError, ValueError):
                continue
        write_json(out / "coco.json", merge_coco(parts), overwrite=True)
    if "pairs" in formats:
        pairs = [
            pair_entry(out / "pairs", stem, rec.get("provenance"))
            for stem, rec in recs.items()
            if "pair_image" in rec.get("outputs", {})
        ]
        update_pairs_manifest(out / "pairs", pairs, replace_all=True)
    rows = [{k: e.get(k) for k in ENTRY_KEYS} for e in entries]
    for r in rows:
        r["error"] = r.get("error") or ""
        r["slice"] = r.get("slice") or ""
    table = pd.DataFrame(rows, columns=list(ENTRY_KEYS))
    table = table[["stem", "source", "slice", "count", "status", "error"]]
    write_table_csv(out / "counts.csv", table.astype({"count": "Int64"}), overwrite=True)
    write_manifest(out, cmd, report, argv, settings, entries, "images", "planes")


def assemble_tracks(out: Path, cmd, report: BatchReport, argv, settings: dict) -> None:
    """``tracks.csv`` (one row per stack) and ``tracks_manifest.json``."""
    current = _entries(report, TRACK_KEYS)
    entries = merge_entries(previous_entries(out, cmd.manifest, cmd.tool, "stacks"), current)
    open_run_files(out, cmd)

    def seconds(e: dict) -> float | None:
        if e.get("status") not in ("done", "skipped"):
            return None
        rec = records.read_record(out, f"{e['stem']}_tracks") or {}
        return round(float(rec.get("seconds") or 0.0), 3)

    rows = [
        {
            "file": e.get("source"),
            "stem": e["stem"],
            "slice": e.get("slice") or "",
            "frames": e.get("frames"),
            "tracks": e.get("tracks"),
            "seconds": seconds(e),
            "status": e.get("status"),
            "error": e.get("error") or "",
        }
        for e in entries
    ]
    for item, why in report.input_problems:
        rows.append(
            {
                "file": item,
                "stem": "",
                "slice": "",
                "frames": None,
                "tracks": None,
                "seconds": None,
                "status": "failed",
                "error": why,
            }
        )
    cols = ["file", "stem", "slice", "frames", "tracks", "seconds", "status", "error"]
    table = pd.DataFrame(rows, columns=cols).astype({"frames": "Int64", "tracks": "Int64"})
    write_table_csv(out / cmd.summary, table, overwrite=True)
    write_manifest(out, cmd, report, argv, settings, entries, "stacks", "stacks")
