from __future__ import annotations

import multiprocessing as mp

from scoring import DocScore, EngineConfig, ScoreCache, ScoringEngine


def test_cached_documents_are_not_recomputed(tiny_pair, tmp_path):
    cache_path = tmp_path / "cache.sqlite"
    texts = ["alpha beta", "gamma delta epsilon", "alpha beta", ""]
    first = ScoringEngine.from_pretrained(*tiny_pair, EngineConfig(dtype="float32"), cache=cache_path)
    a = first.score(texts)
    assert first.stats.scored_documents == 3  # the duplicate is scored once
    second = ScoringEngine.from_pretrained(*tiny_pair, EngineConfig(dtype="float32"), cache=cache_path)
    b = second.score([*texts, "new one"])
    assert b[:4] == a  # bit-identical from the cache
    assert second.stats.scored_documents == 1 and second.stats.cache_hits == 4
    # A different fingerprint (other max_length) must not reuse those rows.
    third = ScoringEngine.from_pretrained(*tiny_pair, EngineConfig(dtype="float32", max_length=64), cache=cache_path)
    third.score(texts)
    assert third.stats.cache_hits == 0


def _writer(path: str, worker: int) -> None:
    cache = ScoreCache(path)
    for i in range(50):
        cache.put_many("fp", [(f"h{worker}-{i}", DocScore.from_logprobs(i + 1, -1.0, -2.0)), ("shared", DocScore.from_logprobs(1, -1.0, -2.0))])
    cache.close()


def test_cache_is_safe_across_processes(tmp_path):
    path = str(tmp_path / "c.sqlite")
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        # Generous: each spawned process imports torch, which takes a minute on a loaded 2-core machine;
        # the test is about correctness under concurrent writers, not speed.
        p.join(600)
        assert p.exitcode == 0
    cache = ScoreCache(path)
    assert len(cache) == 151
    got = cache.get_many("fp", ["h1-10", "shared", "missing"])
    assert got["h1-10"] == DocScore.from_logprobs(11, -1.0, -2.0) and "missing" not in got
