"""A cascade job on the Ray executor ends with the local executor's bytes (its spec pickles; each
actor builds the proxy and the pair; the audit runs on an actor too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from tests.corpus.helpers import tree_bytes
from tests.scoring.test_proxy import zebra_sample


@pytest.mark.ray
@pytest.mark.slow  # Ray start-up and two actors each loading the proxy and the pair: minutes on 2 loaded cores
@pytest.mark.timeout(600)
def test_cascade_on_ray_is_byte_identical_to_local(ray_local: Any, tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    texts = tmp_path / "docs.jsonl"
    texts.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(zebra_sample(48, seed=3).texts)))
    teacher, reference = (str(p) for p in tiny_pair)
    pair = ["--teacher", teacher, "--reference", reference, "--dtype", "float32", "--device", "cpu", "--threads", "1"]
    assert main(["score", *pair, "-o", str(tmp_path / "scores.parquet"), str(texts)]) == 0
    proxy = tmp_path / "proxy"
    assert main(["distill", "--scores", str(tmp_path / "scores.parquet"), "--texts", str(texts), "--tokenizer", teacher,
                 "--out", str(proxy), "--hash-bits", "12", "--families", "tokens", "--ridge-alphas", "1e-3"]) == 0
    job = [*pair, "--cascade", f"proxy:{proxy}", "--band", "0.4", "--audit-documents", "8", "--chunk-docs", "16"]
    assert main(["rewrite", *job, "--out", str(tmp_path / "local"), str(texts)]) == 0
    assert main(["rewrite", "--executor", "ray", "--ray-actors", "2", *job, "--out", str(tmp_path / "ray"), str(texts)]) == 0
    assert tree_bytes(tmp_path / "ray") == tree_bytes(tmp_path / "local")
    scorer = json.loads((tmp_path / "ray" / "report.json").read_text())["scorer"]
    assert scorer["kind"] == "cascade" and scorer["documents_by_pair"] > 0 and scorer["audit"]["documents"] == 8
