#!/usr/bin/env python3
"""Deletes test and bench executables of earlier builds from the shared cargo target dir.

Usage: prune-stale-executables.py <cargo build --message-format=json output>

Every clone on a machine shares one CARGO_TARGET_DIR (./dev). Each code change links new test
executables (100-300 MB each with debug info) under a new hash, and the old ones stay: 170 of
them had filled 42 GB and then the disk. After `./dev test`'s build, this keeps, for every
executable the build produced, only that one among the files of the same name in its directory
(`<name>-<16 hex digits>`); other names are left alone.
"""
import json
import os
import re
import sys

HASHED = re.compile(r"^(?P<name>.+)-[0-9a-f]{16}$")


def main(messages_path: str) -> None:
    current = set()
    with open(messages_path, encoding="utf-8") as messages:
        for line in messages:
            if not line.startswith("{"):
                continue
            message = json.loads(line)
            executable = message.get("executable")
            if message.get("reason") == "compiler-artifact" and executable:
                current.add(os.path.realpath(executable))
    keep_by_dir = {}
    for path in current:
        match = HASHED.match(os.path.basename(path))
        if match:
            keep_by_dir.setdefault(os.path.dirname(path), {}).setdefault(match["name"], set()).add(path)
    removed = freed = 0
    for directory, names in keep_by_dir.items():
        for entry in os.scandir(directory):
            match = HASHED.match(entry.name)
            if not match or match["name"] not in names or not entry.is_file():
                continue
            path = os.path.realpath(entry.path)
            if path in names[match["name"]] or not os.access(path, os.X_OK):
                continue
            freed += entry.stat().st_size
            os.remove(path)
            removed += 1
            if os.path.exists(path + ".d"):
                os.remove(path + ".d")
    print(f"pruned {removed} stale executables ({freed / 1e9:.1f} GB) from the shared target dir",
          file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
