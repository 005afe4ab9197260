"""Stratified selection: every group's share is exact, each group matches a selection run on that group
alone (the per-group oracle), guards stay corpus-wide, and the job is byte-identical on rerun."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from corpus.config import RewriteConfig, SelectionConfig
from corpus.manifest import load_manifest
from corpus.rewrite import job_fingerprint, run_rewrite
from corpus.sampler import hash_prefix, select
from corpus.stratify import apportion, group_seed
from scoring.errors import ConfigError
from service.commands.config_args import add_model_args, model_kwargs
from tests.corpus.fakes import FakeSpec
from tests.corpus.helpers import make_rows, tree_bytes, write_jsonl

SIZES = {"bible": 16, "python-docs": 50, "shakespeare": 30}


def grouped_corpus(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.array([g for g, n in SIZES.items() for _ in range(n)])
    rng.shuffle(labels)
    n = len(labels)
    # python-docs scores high: an unstratified top half is mostly python-docs.
    score = rng.normal(size=n).round(2) + np.where(labels == "python-docs", 2.0, 0.0)
    return {
        "score": score,
        "teacher_logprob": rng.normal(-3, 1, size=n),
        "n_tokens": rng.integers(1, 200, size=n),
        "ok": np.ones(n, dtype=bool),
        "content_hash": hash_prefix([hashlib.sha256(f"doc {i}".encode()).hexdigest() for i in range(n)]),
        "groups": labels,
    }


def alone(data: dict[str, np.ndarray], group: str, config: SelectionConfig, seed: int):
    """The per-group oracle: the plain selection over that group's documents only."""
    where = data["groups"] == group
    sub = {k: v[where] for k, v in data.items() if k != "groups"}
    return select(config, seed=seed, **sub), where


def test_apportion_is_exact_and_deterministic() -> None:
    parts = apportion(10, [Fraction(1, 3)] * 3, ["a", "b", "c"])
    assert parts == [4, 3, 3] and sum(parts) == 10  # the tie goes to the first label
    assert apportion(7, [Fraction(0), Fraction(5)], ["a", "b"]) == [0, 7]
    assert apportion(0, [Fraction(1)], ["a"]) == [0]


@pytest.mark.parametrize("ratio", [0.5, 0.3, 0.77])
def test_top_fraction_keeps_the_same_ratio_in_every_group(ratio: float) -> None:
    data = grouped_corpus()
    config = SelectionConfig(ratio=ratio, stratify_by="source")
    sel = select(config, **data)
    plain = SelectionConfig(ratio=ratio)
    for group, n in SIZES.items():
        oracle, where = alone(data, group, plain, 0)
        assert (sel.repeats[where] == oracle.repeats).all()
        assert int(sel.repeats[where].sum()) == int(np.ceil(round(ratio * n, 9)))
        assert sel.strata is not None and sel.strata[group]["threshold"] == oracle.threshold
    assert sel.threshold is None  # no single cut: each group has its own
    unstratified = select(plain, **{k: v for k, v in data.items() if k != "groups"})
    kept_python = unstratified.repeats[data["groups"] == "python-docs"].sum()
    assert kept_python > np.ceil(ratio * 50)  # what stratifying prevents: the easy source crowding in


def test_group_shares_are_exact() -> None:
    data = grouped_corpus(1)
    config = SelectionConfig(
        ratio=0.5, stratify_by="source", group_shares={"bible": 0.25, "python-docs": 0.25}
    )
    sel = select(config, **data)
    kept = Counter(data["groups"][sel.repeats > 0].tolist())
    assert kept == {"bible": 12, "python-docs": 12, "shakespeare": 24}  # 48 kept: 25%, 25%, the rest
    for group in SIZES:  # each group's kept documents are its best ones
        oracle, where = alone(data, group, SelectionConfig(ratio=kept[group] / SIZES[group]), 0)
        assert (sel.repeats[where] == oracle.repeats).all()


def test_keep_tokens_is_split_by_tokens() -> None:
    data = grouped_corpus(2)
    config = SelectionConfig(keep_tokens=3000, stratify_by="source")
    sel = select(config, **data)
    assert sel.strata is not None
    budgets = {g: s["quota"] for g, s in sel.strata.items()}
    assert sum(budgets.values()) == 3000
    for group, budget in budgets.items():
        oracle, where = alone(data, group, SelectionConfig(keep_tokens=budget), 0)
        assert (sel.repeats[where] == oracle.repeats).all()
        assert sel.strata[group]["tokens_out"] <= budget


@pytest.mark.parametrize("target", [None, 150])
def test_soft_target_is_split_by_group_and_seeded_per_group(target: int | None) -> None:
    data = grouped_corpus(3)
    config = SelectionConfig(method="soft", target_documents=target, stratify_by="source")
    sel = select(config, seed=7, **data)
    assert sel.strata is not None
    quotas = {g: s["quota"] for g, s in sel.strata.items()}
    assert sum(quotas.values()) == (target or sum(SIZES.values()))
    if target is None:
        assert quotas == SIZES  # every group keeps its own mass: the mixture is unchanged
    for group, quota in quotas.items():
        plain = SelectionConfig(method="soft", target_documents=quota)
        oracle, where = alone(data, group, plain, group_seed(7, group))
        assert (sel.repeats[where] == oracle.repeats).all()
        assert int(sel.repeats[where].sum()) == quota
    again = select(config, seed=7, **data)
    assert (again.repeats == sel.repeats).all() and (again.weight == sel.weight).all()


def test_guards_stay_corpus_wide() -> None:
    data = grouped_corpus(4)
    first_bible = int(np.flatnonzero(data["groups"] == "bible")[0])
    first_other = int(np.flatnonzero(data["groups"] != "bible")[0])
    later = max(first_bible, first_other)
    data["content_hash"][later] = data["content_hash"][min(first_bible, first_other)]  # a cross-group copy
    sel = select(SelectionConfig(ratio=1.0, stratify_by="source"), **data)
    assert sel.repeats[later] == 0 and sel.dropped["duplicate"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_shares": {"a": 0.5}}, "group_shares needs stratify_by"),
        ({"stratify_by": "s", "group_shares": {"a": 1.5}}, "group_shares['a']=1.5 must be in (0, 1]"),
        ({"stratify_by": "s", "group_shares": {"a": 0.7, "b": 0.6}}, "group_shares sum to 1.3"),
        ({"stratify_by": ""}, "stratify_by"),
    ],
)
def test_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=message.replace("[", r"\[").replace("(", r"\(")):
        SelectionConfig(**kwargs)


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ({"gospels": 0.2}, r"group_shares names \['gospels'\]"),
        ({"bible": 0.9}, "group 'bible' must supply 43 of the 48 documents kept"),
        ({"bible": 0.2, "python-docs": 0.3, "shakespeare": 0.3}, "the other 0.2 of the output has no group"),
    ],
)
def test_shares_the_data_cannot_meet_are_named(shares: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        select(SelectionConfig(ratio=0.5, stratify_by="source", group_shares=shares), **grouped_corpus())


def test_unstratified_fingerprint_is_unchanged() -> None:
    config = RewriteConfig(inputs=["x"], output="o")
    assert "stratify_by" not in job_fingerprint(config, {})["selection"]
    stratified = RewriteConfig(inputs=["x"], output="o", selection=SelectionConfig(stratify_by="source"))
    assert job_fingerprint(stratified, {})["digest"] != job_fingerprint(config, {})["digest"]


def test_cli_flags_parse_shares() -> None:
    parser = argparse.ArgumentParser()
    names = ("stratify_by", "group_shares")
    add_model_args(parser, SelectionConfig, names)
    args = parser.parse_args(["--stratify-by", "source", "--group-shares", "python-docs=0.3,a=b=0.2"])
    config = SelectionConfig(**model_kwargs(args, names))
    assert config.group_shares == {"python-docs": 0.3, "a=b": 0.2}
    with pytest.raises(SystemExit):
        parser.parse_args(["--group-shares", "python-docs"])


def source_rows(prefix: str, n: int, source: str | None) -> list[dict]:
    rows = make_rows(n, prefix=prefix)
    for r in rows:
        if source is not None:
            r["source"] = source
    return rows


def test_rewrite_job_stratified_end_to_end(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    a = write_jsonl(d / "a.jsonl", source_rows("a", 60, "web") + source_rows("b", 20, "books"), [b"not json"])
    b = write_jsonl(d / "b.jsonl", source_rows("c", 30, "books") + source_rows("d", 10, None))
    selection = SelectionConfig(ratio=0.5, stratify_by="source")

    def run(out: Path):
        config = RewriteConfig(
            inputs=[str(a), str(b)], output=str(out), chunk_docs=16, shard_rows=20, selection=selection
        )
        return run_rewrite(config, FakeSpec())

    result = run(tmp_path / "out")
    kept = Counter(
        r.get("source") or "(missing)"
        for s in load_manifest(tmp_path / "out").shards
        for r in pq.read_table(tmp_path / "out" / s.path).to_pylist()
    )
    assert kept == {"web": 30, "books": 25, "(missing)": 5}
    strata = result.report["strata"]
    assert set(strata) == {"web", "books", "(missing)"}  # the unreadable row is not ok: never a group
    assert {g: s["kept_documents"] for g, s in strata.items()} == dict(kept)
    groups = result.report["diagnostics"]["groups"]
    assert groups["books"]["kept"] == 25
    assert json.loads((tmp_path / "out" / "report.json").read_text())["strata"] == strata
    run(tmp_path / "again")
    assert tree_bytes(tmp_path / "out") == tree_bytes(tmp_path / "again")


def test_group_field_may_be_a_dotted_path() -> None:
    from corpus.groups import field_value

    row = {"meta": {"pile_set_name": "ArXiv"}, "meta.x": 1, "source": None}
    assert field_value(row, "meta.pile_set_name") == "ArXiv"
    assert field_value(row, "meta.x") == 1  # a top-level key with a dot wins over the path
    assert field_value(row, "meta.missing") is None and field_value(row, "source") is None


def test_group_field_alone_reports_groups_without_stratifying(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    a = write_jsonl(d / "a.jsonl", source_rows("a", 40, "web") + source_rows("b", 20, "books"))
    plain = run_rewrite(
        RewriteConfig(inputs=[str(a)], output=str(tmp_path / "plain"), chunk_docs=16), FakeSpec()
    )
    grouped = run_rewrite(
        RewriteConfig(inputs=[str(a)], output=str(tmp_path / "grouped"), chunk_docs=16, group_field="source"),
        FakeSpec(),
    )
    assert "strata" not in grouped.report and "groups" not in plain.report["diagnostics"]
    groups = grouped.report["diagnostics"]["groups"]
    assert {g: v["documents"] for g, v in groups.items()} == {"web": 40, "books": 20}
    assert sum(v["kept"] for v in groups.values()) == 30
    assert [s.sha256 for s in grouped.manifest.shards] == [s.sha256 for s in plain.manifest.shards]
    with pytest.raises(ConfigError, match="name different fields"):
        RewriteConfig(inputs=["x"], output="o", group_field="a", selection=SelectionConfig(stratify_by="b"))
