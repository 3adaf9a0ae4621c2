"""The cold-tier move of the fs blob backend, next to a plain ``shutil.copyfile`` of the same
files in the same run.

    .venv/bin/python -m bench.imaging_retention [--blobs 40] [--mb 2]

``--blobs`` blobs of ``--mb`` MB of random bytes are stored (encrypted) in a temporary folder,
then each is moved as ``enrs imaging retention run`` moves an instance: ``copy_to_cold`` (the
ciphertext and meta copied to the cold folder, fsync'd, then read back and decrypted to verify
its size and SHA-256) and ``release_warm`` (the warm copy deleted). The baseline copies the same
ciphertext files with ``shutil.copyfile`` into another folder, without then with an ``fsync`` of
each copy (the move fsyncs its two files and the folder). Printed: MB/s for each, and the ratio
to the plain copy. The database part of the job (one
transaction and one audit record per study) is not measured here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from enrs.kit.storage import FsBlobStorage, MasterKeyring


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=40)
    parser.add_argument("--mb", type=float, default=2.0)
    args = parser.parse_args()
    size = int(args.mb * 1024 * 1024)
    with tempfile.TemporaryDirectory(prefix="enrs-bench-tier-") as tmp:
        root = Path(tmp)
        store = FsBlobStorage(root / "warm", MasterKeyring(root / "keys.json"), root / "cold")
        keys = [f"imaging/2020/01/{n:04d}.dcm" for n in range(args.blobs)]
        for key in keys:
            store.put(key, os.urandom(size), "application/dicom")
        total_mb = args.blobs * size / 1e6

        baseline = root / "copies"
        start = time.perf_counter()
        for key in keys:
            target = baseline / f"{key}.blob"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / "warm" / f"{key}.blob", target)
        copy_s = time.perf_counter() - start

        synced = root / "synced"
        start = time.perf_counter()
        for key in keys:
            target = synced / f"{key}.blob"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / "warm" / f"{key}.blob", target)
            with target.open("rb+") as f:
                os.fsync(f.fileno())
        sync_s = time.perf_counter() - start

        start = time.perf_counter()
        for key in keys:
            store.copy_to_cold(key)
            store.release_warm(key)
        move_s = time.perf_counter() - start
        assert all(store.tier(key) == "cold" for key in keys)

    print(f"{args.blobs} blobs of {args.mb:g} MB ({total_mb:.1f} MB)")
    print(f"shutil.copyfile:           {total_mb / copy_s:8.1f} MB/s  ({copy_s:.2f} s)")
    print(f"shutil.copyfile + fsync:   {total_mb / sync_s:8.1f} MB/s  ({sync_s:.2f} s)")
    print(f"copy_to_cold+release_warm: {total_mb / move_s:8.1f} MB/s  ({move_s:.2f} s)")
    print(f"ratio move/copyfile:       {copy_s / move_s:8.2f}")


if __name__ == "__main__":
    main()
