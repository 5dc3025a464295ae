"""`posttrain store ls|gc [STORE]`: what the stage store holds, and removing what nothing uses.

    posttrain store ls                  every entry: stage, type, fingerprint, status, size, run_dirs, last use
    posttrain store gc                  what gc would remove (a dry run), and the space it frees
    posttrain store gc --delete         remove it
    posttrain store gc --unused-days 30 --delete    only entries no run used for 30 days

STORE defaults to $POSTTRAIN_STORE_DIR, else outputs/store (the default of `store_dir`). gc never
removes an entry a registered run_dir links to, nor one whose lock a run holds (training it,
waiting for it, or using it); it takes the entry's lock itself, checks again, then removes it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from workflows.state.lock import entry_busy, hold_entry, release_entry
from workflows.store.layout import EntryInfo, Store, default_store, describe

TRASH = ".trash"  # an entry is renamed here (one atomic step), then deleted


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _short(path: str) -> str:
    """A path relative to the working directory when it is inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds)) if seconds else "-"


def inventory(store: Store) -> list[EntryInfo]:
    refs = store.references()
    return [describe(e, store.lock_file(e), refs.get(e, []), entry_busy(store.lock_file(e))) for e in store.entries()]


def _table(infos: list[EntryInfo], why: dict[Path, str] | None = None) -> str:
    rows = [["stage", "type", "fingerprint", "status", "size", "run_dirs", "last used"] + (["gc"] if why else [])]
    for i in infos:
        used = ", ".join(_short(r) + (f" ({s})" if s not in i.names[:1] else "") for r, s in i.references) or "-"
        rows.append([",".join(i.names) or "?", i.type, i.fingerprint[:12], i.status + (", in use" if i.busy else ""),
                     _size(i.size_bytes), used, _when(i.last_used)] + ([why[i.path]] if why else []))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def ls(args: argparse.Namespace) -> int:
    store = Store.of(args.store)
    infos = inventory(store)
    if args.json:
        print(json.dumps({"store": str(store.root), "entries": [i.to_dict() for i in infos]}, indent=2))
    elif not infos:
        print(f"{store.root}: no entries")
    else:
        total = sum(i.size_bytes for i in infos)
        print(f"{store.root}: {len(infos)} entries, {_size(total)}\n{_table(infos)}")
    return 0


def _verdict(info: EntryInfo, unused_for: float) -> str:
    if info.references:
        return "keep: linked from a run_dir"
    if info.busy:
        return "keep: a run holds it"
    if unused_for and info.last_used and time.time() - info.last_used < unused_for:
        return "keep: used recently"
    return "remove"


def _remove(store: Store, entry: Path) -> bool:
    """Remove one entry under its own lock, after checking again that nothing links to it."""
    lock = store.lock_file(entry)
    if hold_entry(lock, exclusive=True, wait=False) is None:
        return False  # a run took it meanwhile
    try:
        if entry in store.references():
            return False
        trash = store.root / TRASH / f"{entry.parent.name}-{entry.name}-{os.getpid()}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(entry, trash)  # atomic: a run planning now sees the entry whole or not at all
        shutil.rmtree(trash, ignore_errors=True)
        return True
    finally:
        release_entry(lock)


def gc(args: argparse.Namespace) -> int:
    store = Store.of(args.store)
    gone = [r for r in store.run_dirs() if not Path(r).is_dir()]
    infos = inventory(store)
    why = {i.path: _verdict(i, args.unused_days * 86400) for i in infos}
    doomed = [i for i in infos if why[i.path] == "remove"]
    removed: list[EntryInfo] = []
    if args.delete:
        removed = [i for i in doomed if _remove(store, i.path)]
        for run_dir in gone:
            store.forget(run_dir)
        for i in doomed:
            if i not in removed:
                why[i.path] = "keep: taken by a run meanwhile"
    freed = sum(i.size_bytes for i in (removed if args.delete else doomed))
    if args.json:
        print(json.dumps({"store": str(store.root), "deleted": args.delete, "freed_bytes": freed,
                          "entries": [{**i.to_dict(), "gc": why[i.path]} for i in infos],
                          "forgotten_run_dirs": gone if args.delete else []}, indent=2))
        return 0
    if not infos:
        print(f"{store.root}: no entries")
        return 0
    print(_table(infos, why))
    if args.delete:
        print(f"\nremoved {len(removed)} of {len(infos)} entries, freed {_size(freed)}"
              + (f"; forgot {len(gone)} run_dirs that no longer exist" if gone else ""))
    else:
        print(f"\ndry run: would remove {len(doomed)} of {len(infos)} entries ({_size(freed)}); "
              f"add --delete to remove them")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="posttrain store", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, about in (("ls", "list the entries"), ("gc", "remove entries no run_dir links to (dry run unless "
                                                           "--delete)")):
        cmd = sub.add_parser(name, help=about, description=about)
        cmd.add_argument("store", nargs="?", default=default_store(),
                         help="the store (default: $POSTTRAIN_STORE_DIR, else outputs/store)")
        cmd.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "gc":
            cmd.add_argument("--delete", action="store_true", help="remove the entries (default: only say which)")
            cmd.add_argument("--unused-days", type=float, default=0.0,
                             help="only entries no run used for this many days")
    args = parser.parse_args(argv)
    if not Path(args.store).is_dir():
        print(f"error: no store at {args.store} (set POSTTRAIN_STORE_DIR or pass the store's path)", file=sys.stderr)
        return 2
    return ls(args) if args.command == "ls" else gc(args)


if __name__ == "__main__":
    sys.exit(main())
