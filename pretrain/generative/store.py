"""The variant store: generated variants of a dataset split on disk, with a manifest and provenance.

Layout (it mirrors the dataset's own files; ``<store>`` defaults to ``<data root>/<dataset folder>-variants/
<store name>``, e.g. ``<root>/imagenet-variants/sd-unclip``)::

    <store>/manifest.json                 generator, weights digest, settings, seed, dataset/split, source
                                          listing fingerprint (schema augbench-variants/1)
    <store>/<source relpath without extension>/<k:02d><ext>
                                          variant k of that source (ext: the source's JPEG extension,
                                          else .png), e.g. train/n01440764/n01440764_10026/03.JPEG
    <store>/records/<shard>.jsonl         one line per finished source image: index, relpath, the seed
                                          of each variant, device, seconds (per-variant provenance)
    <store>/COMPLETE.json                 written once every source of the split has a record

Crash safety: each variant is written to a temporary file and renamed into place; a source's record line
is appended (one ``write`` + ``fsync``) only after all its variants are in place, so a record always
means "complete", and a kill loses at most the batch in flight.  A trailing line without its newline (a
kill inside the write) is ignored.  Shards (``--shard i/n``) append to their own records file, so
processes on other nodes never write the same file; the set of finished sources is the union of all
records files.

Identity: :meth:`VariantStore.digest` hashes the manifest's identity fields (everything that changes the
pixels); a second ``bench generate`` with other settings into the same store is refused, and training
results record the digest.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from core.errors import BenchError, DatasetError
from core.fsutil import atomic_path
from core.results import atomic_write_text
from pretrain.generative.sources import SourceSet
from tasks.datasets.registry import DATASETS

SCHEMA = "augbench-variants/1"
MANIFEST = "manifest.json"
COMPLETE = "COMPLETE.json"
RECORDS = "records"
#: Manifest fields that make up a store's identity (what changes the variants' pixels).
IDENTITY = ("schema", "generator", "dataset", "split", "per_image", "settings", "generator_info", "source")
JPEG_SUFFIXES = (".jpg", ".jpeg")


class StoreError(BenchError):
    """A variant store that is missing, incomplete, corrupt or made with other settings."""


def default_store_dir(root: Path, dataset: str, name: str) -> Path:
    """``<root>/<dataset folder>-variants/<name>`` (next to the dataset, under the same data root)."""
    folder = DATASETS.get(dataset).path(root)
    return folder.parent / f"{folder.name}-variants" / name


def resolve_store_dir(spec: str, root: Path, dataset: str) -> Path:
    """A recipe's ``store``: a bare name (``sd-unclip``) lives at :func:`default_store_dir`; anything with a
    path separator, ``~`` or a leading ``.`` is a path (relative paths are taken from the data root)."""
    if "/" in spec or os.sep in spec or spec.startswith((".", "~")):
        path = Path(spec).expanduser()
        return path if path.is_absolute() else (root / path)
    return default_store_dir(root, dataset, spec)


def variant_relpath(source_relpath: str, k: int) -> str:
    """Where variant ``k`` of the source at ``source_relpath`` lives inside the store."""
    src = PurePosixPath(source_relpath.replace(os.sep, "/"))
    ext = src.suffix if src.suffix.lower() in JPEG_SUFFIXES else ".png"
    stem = src.with_suffix("") if src.suffix else src
    return f"{stem}/{k:02d}{ext}"


def identity_digest(manifest: dict[str, Any]) -> str:
    blob = json.dumps({k: manifest.get(k) for k in IDENTITY}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class VariantStore:
    """A store directory (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- manifest ------------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            raise StoreError(f"no variant store at {self.path} (no {MANIFEST})") from None
        except (OSError, ValueError) as exc:
            raise StoreError(f"unreadable store manifest {self.manifest_path}: {exc}") from None
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise StoreError(f"{self.manifest_path} is not an augbench variant store manifest ({SCHEMA})")
        return doc

    def digest(self) -> str:
        return identity_digest(self.manifest())

    def open_for(self, manifest: dict[str, Any]) -> None:
        """Create the store with ``manifest``, or check that an existing store has the same identity."""
        if not self.exists():
            atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2) + "\n")
            return
        have = self.manifest()
        for key in IDENTITY:
            if have.get(key) != manifest.get(key):
                raise StoreError(
                    f"{self.path} holds variants made with another {key} ({_short(have.get(key))} != "
                    f"{_short(manifest.get(key))}); use another --out or store name, or delete it"
                )

    # -- variants and records -------------------------------------------------------------------------
    def variant_path(self, source_relpath: str, k: int) -> Path:
        return self.path / variant_relpath(source_relpath, k)

    def clear_partial(self, source_relpath: str) -> list[Path]:
        """Delete the temporaries a killed run left among one source's variants.  Only the shard that
        owns the source (re)writes it, so any temporary there is stale, whatever host wrote it."""
        folder = self.variant_path(source_relpath, 0).parent
        stale = list(folder.glob(".*.tmp-*")) if folder.is_dir() else []
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def write_variant(self, source_relpath: str, k: int, image: Image.Image) -> Path:
        """Write one variant atomically (JPEG quality 95 for JPEG sources, else PNG)."""
        path = self.variant_path(source_relpath, k)
        fmt = "JPEG" if path.suffix.lower() in JPEG_SUFFIXES else "PNG"
        with atomic_path(path) as tmp:
            image.convert("RGB").save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        return path

    def append_records(self, shard: str, records: Iterable[dict[str, Any]]) -> None:
        """Append finished sources' records (after their variants are in place): one write + fsync."""
        lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        if not lines:
            return
        path = self.path / RECORDS / f"{shard}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete record line of every shard (a torn last line is skipped)."""
        folder = self.path / RECORDS
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("*.jsonl")):
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if not line.endswith("\n"):
                        break  # killed inside the write: the source is not done
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue

    def done(self) -> set[str]:
        """Relative paths of the sources whose variants are all written."""
        return {str(r["source"]) for r in self.records()}

    # -- completeness ----------------------------------------------------------------------------------
    def mark_complete_if_done(self, sources: SourceSet) -> bool:
        """Write ``COMPLETE.json`` when every source of ``sources`` has a record; returns completeness."""
        done = self.done()
        missing = sum(1 for rel in sources.relpaths if rel not in done)
        if missing:
            return False
        doc = {"digest": self.digest(), "num_sources": len(sources), "fingerprint": sources.fingerprint}
        atomic_write_text(self.path / COMPLETE, json.dumps(doc, indent=2) + "\n")
        return True

    def is_complete(self) -> bool:
        try:
            doc = json.loads((self.path / COMPLETE).read_text())
        except (OSError, ValueError):
            return False
        return bool(doc.get("digest") == self.digest())

    def verify(self, sources: SourceSet, check_images: bool = False) -> list[str]:
        """Problems of the store against its source split: manifest mismatch, sources without a record,
        recorded variants missing on disk and (``check_images``) variants that do not decode."""
        problems: list[str] = []
        try:
            manifest = self.manifest()
        except StoreError as exc:
            return [str(exc)]
        if manifest["source"]["fingerprint"] != sources.fingerprint:
            problems.append(
                f"the source split changed since generation ({sources.dataset}/{sources.split} listing "
                f"fingerprint differs): regenerate the store"
            )
        per_image = int(manifest["per_image"])
        done = self.done()
        pending = [rel for rel in sources.relpaths if rel not in done]
        if pending:
            problems.append(
                f"{len(pending)} of {len(sources)} source images have no variants yet (e.g. {pending[0]}); "
                f"rerun the same `bench generate` command to finish"
            )
        absent, broken = [], []
        for rel in sources.relpaths:
            if rel not in done:
                continue
            for k in range(per_image):
                path = self.variant_path(rel, k)
                if not path.is_file():
                    absent.append(str(path))
                elif check_images and not _decodes(path):
                    broken.append(str(path))
        if absent:
            problems.append(f"{len(absent)} recorded variant file(s) missing, e.g. {absent[0]}")
        if broken:
            problems.append(f"{len(broken)} variant file(s) do not decode, e.g. {broken[0]}")
        return problems


def _decodes(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            img.convert("RGB")
    except Exception:  # any decoder failure
        return False
    return True


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def require_store(path: Path, dataset: str, split: str, how: str) -> VariantStore:
    """The complete store at ``path`` for ``dataset``/``split``; otherwise a :class:`StoreError` whose
    message contains ``how`` (the ``bench generate`` command that makes or finishes it)."""
    store = VariantStore(path)
    if not store.exists():
        raise StoreError(f"variant store missing: {path}; make it with: {how}")
    manifest = store.manifest()
    if (manifest.get("dataset"), manifest.get("split")) != (dataset, split):
        raise DatasetError(
            f"variant store {path} holds {manifest.get('dataset')}/{manifest.get('split')}, "
            f"not {dataset}/{split}"
        )
    if not store.is_complete():
        raise StoreError(f"variant store {path} is incomplete; finish it with: {how}")
    return store
