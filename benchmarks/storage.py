"""Feature storage formats on real features: bytes per row, and how close each format's LESS scores stay to fp16's.

Takes a finished fp16 datastore (the demo's, ``demo_output/warmup/less_datastore/<key>/``), re-stores its pool
features offline in every storage dtype (float16, int8, packed int4/int2/int1) with the writer's own quantisers, scores
each copy against the datastore's targets, and reports per format: bytes per row and size against fp16, and per target
the overlap of the top-5% selections with fp16's and the Spearman correlation of the scores. Targets are re-stored as
the build would store them (int8 with an int8 pool; float16 with a packed pool).

    python -m benchmarks.storage demo_output/warmup/less_datastore/<key>
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from .common import Section, spearman

FORMATS = ["float16", "int8", "int4", "int2", "int1"]
ROWS_PER_CHUNK = 4096


def find_datastore(*roots: Path) -> Path | None:
    """A complete fp16 datastore under the demo's output folder of one of ``roots``."""
    for root in roots:
        for manifest in sorted(Path(root).glob("demo_output/warmup/less_datastore/*/manifest.json")):
            data = json.loads(manifest.read_text())
            if data.get("status") == "complete" and data.get("storage_dtype") == "float16":
                return manifest.parent
    return None


def _restore_folder(folder: Path, storage: str) -> dict[str, dict]:
    """Re-store every ``d<dim>.npy`` of a finished feature folder in ``storage``; updates its ``checksums.json`` and
    returns the new ``{file name: checksum}``."""
    from less_hf.datastore.packed import PACKED_BITS, pack_rows, scales_file_name
    from less_hf.datastore.store import CHECKSUMS_FILE, file_checksum, quantize_rows, stored_layout

    record = json.loads((folder / CHECKSUMS_FILE).read_text())
    for path in sorted(folder.glob("d*.npy")):
        if not path.stem[1:].isdigit():
            continue
        values = np.load(path)
        n, dim = values.shape
        dtype, columns = stored_layout(storage, dim)
        out = np.empty((n, columns), dtype=dtype)
        scales = np.empty((n, 1), dtype=np.float32)
        for lo in range(0, n, ROWS_PER_CHUNK):
            chunk = values[lo : lo + ROWS_PER_CHUNK].astype(np.float32)
            if storage in PACKED_BITS:
                out[lo : lo + len(chunk)], scales[lo : lo + len(chunk)] = pack_rows(chunk, PACKED_BITS[storage])
            else:
                out[lo : lo + len(chunk)] = quantize_rows(chunk) if storage == "int8" else chunk
        np.save(path, out)
        if storage in PACKED_BITS:
            np.save(folder / scales_file_name(dim), scales)
    record["files"] = {p.name: file_checksum(p) for p in sorted(folder.glob("*.npy"))}
    (folder / CHECKSUMS_FILE).write_text(json.dumps(record))
    return record["files"]


def restore(src: Path, dst: Path, storage: str) -> None:
    """Copy a datastore with its pool (and, for int8, its targets') features re-stored in ``storage``."""
    from less_hf.datastore.manifest import Manifest

    shutil.copytree(src, dst)
    manifest = Manifest.load(dst)
    if storage != manifest.storage_dtype:
        for folder in sorted((dst / "pool").iterdir()):
            files = _restore_folder(folder, storage)
            manifest.files = {k: v for k, v in manifest.files.items() if not k.startswith(f"pool/{folder.name}/")}
            manifest.files.update({f"pool/{folder.name}/{name}": v for name, v in files.items() if name != "done.npy"})
        if storage == "int8":
            for folder in sorted((dst / "targets").glob("*/checkpoint-*")):
                _restore_folder(folder, storage)
        manifest.storage_dtype = storage
        manifest.save(dst)


def run(datastore: Path | None, fraction: float = 0.05) -> Section:
    from less_hf.datastore import Datastore, load_target_features
    from less_hf.datastore.store import row_bytes
    from less_hf.scoring import score_datastore

    if datastore is None:
        raise FileNotFoundError(
            "No finished fp16 datastore found for the storage section: run `less-hf demo` first (it writes "
            "demo_output/warmup/less_datastore/<key>/) or pass --datastore DIR."
        )
    src = Path(datastore)
    manifest = json.loads((src / "manifest.json").read_text())
    n, dims, checkpoints = manifest["n_rows"], [p["dim"] for p in manifest["projectors"]], len(manifest["checkpoints"])
    scores, sizes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for storage in FORMATS:
            dst = Path(tmp) / storage
            restore(src, dst, storage)
            sizes[storage] = sum(p.stat().st_size for p in (dst / "pool").rglob("d*.npy") if p.name != "done.npy")
            store = Datastore.open(dst)
            store.verify()
            targets = [load_target_features(p) for p in sorted((dst / "targets").iterdir()) if p.is_dir()]
            scores[storage] = score_datastore(store, targets)
            shutil.rmtree(dst)
    names = sorted(scores["float16"])
    section = Section(
        "6. Feature storage: size vs agreement with fp16 scores (real features)",
        [
            "storage",
            "bytes / row (d=8192)",
            "on disk vs fp16",
            *[f"{t.split('-')[0]} top-{100 * fraction:.0f}% overlap" for t in names],
            *[f"{t.split('-')[0]} Spearman" for t in names],
        ],
        data={"datastore": str(src), "n_rows": n, "dims": dims, "checkpoints": checkpoints, "results": []},
    )
    base = scores["float16"]
    for storage in FORMATS:
        overlaps, rhos = [], []
        for name in names:
            ref, got = base[name], scores[storage][name]
            finite = np.isfinite(ref)
            k = max(1, round(fraction * finite.sum()))
            top = [set(np.argsort(-np.where(finite, s, -np.inf), kind="stable")[:k].tolist()) for s in (ref, got)]
            overlaps.append(len(top[0] & top[1]) / k)
            rhos.append(spearman(ref[finite], got[finite]))
        section.rows.append(
            [
                storage,
                f"{row_bytes(storage, [8192]):,}",
                f"{sizes['float16'] / sizes[storage]:.1f}× smaller" if storage != "float16" else "1×",
                *[f"{o:.2f}" for o in overlaps],
                *[f"{r:.4f}" for r in rhos],
            ]
        )
        section.data["results"].append(
            {
                "storage": storage,
                "bytes": sizes[storage],
                "overlap": dict(zip(names, overlaps)),
                "spearman": dict(zip(names, rhos)),
            }
        )
    k = max(1, round(fraction * n))
    section.notes.append(
        f"Real features: the demo datastore at {src} ({n} pool rows, {checkpoints} checkpoints, d={dims}), its fp16 "
        f"pool features re-stored offline with the writer's quantisers; top-{100 * fraction:.0f}% = {k} rows, so one "
        f"row is {1 / k:.2f} of overlap. Bytes per row are per checkpoint at d=8192 (packed formats include the "
        "4-byte row scale); 'on disk' compares the pool's feature files. Packed formats keep targets in fp16; int8 "
        "stores them in int8, as the build does."
    )
    return section


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else find_datastore(Path.cwd(), root)
    print(run(path).markdown())
