"""ScoringEngine: a teacher/reference pair that turns texts into MiniPLM difference scores."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from scoring.batching import PaddedBatch, Window, bucket_batches, document_windows
from scoring.cache import ScoreCache
from scoring.config import EngineConfig
from scoring.errors import ConfigError, VocabularyMismatchError
from scoring.fingerprint import Fingerprint, model_identity, tokenizer_sha256
from scoring.logprobs import sum_per_row
from scoring.models import (
    ScoringModel,
    check_model_source,
    context_length,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
)
from scoring.protocols import ProgressFn
from scoring.types import STATUS_BLANK, STATUS_EMPTY, DocScore, content_hash

log = logging.getLogger(__name__)

# Without a user setting, windows are capped here: longer contexts cost quadratic attention for
# little change in a document-level mean.
DEFAULT_MAX_LENGTH = 2048
# Fp32 logits materialised at once, per chunk: chunk_tokens = this / (4 bytes x vocab).
LOGITS_CHUNK_BYTES = 128 << 20



@dataclass
class EngineStats:
    """Cumulative counters since the engine was built."""

    documents: int = 0  # documents returned (cache hits included)
    scored_documents: int = 0  # documents that went through the models
    cache_hits: int = 0
    tokens: int = 0  # text tokens scored through the models
    input_tokens: int = 0  # real (unpadded) input positions fed to each model
    padded_tokens: int = 0  # batch slots (rows x width) fed to each model
    batches: int = 0
    forward_seconds: float = 0.0  # time inside teacher + reference forward passes and log-prob heads
    seconds: float = 0.0  # wall time inside score()

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.input_tokens / self.padded_tokens if self.padded_tokens else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def check_same_vocabulary(
    teacher: PreTrainedTokenizerBase, reference: PreTrainedTokenizerBase, teacher_name: str, reference_name: str
) -> None:
    """MiniPLM compares per-token log-probs of one token stream: the vocabularies must be identical."""
    tv, rv = teacher.get_vocab(), reference.get_vocab()
    if tv != rv:
        diff = len(set(tv.items()) ^ set(rv.items()))
        raise VocabularyMismatchError(
            f"teacher tokenizer {type(teacher).__name__} from {teacher_name!r} ({len(tv)} entries) and "
            f"reference tokenizer {type(reference).__name__} from {reference_name!r} ({len(rv)} entries) "
            f"do not share a vocabulary ({diff} differing entries); difference scores need one tokenizer"
        )


@dataclass
class _InFlight:
    """A batch whose log-probs may still be on their way from the device."""

    batch: PaddedBatch
    logprobs: torch.Tensor  # [2, N] float32 (teacher, reference): on the host once `ready` has fired
    ready: torch.cuda.Event | None

    @classmethod
    def start(cls, batch: PaddedBatch, teacher: torch.Tensor, reference: torch.Tensor) -> _InFlight:
        both = torch.stack((teacher, reference))
        if both.device.type != "cuda":
            return cls(batch, both, None)
        host = torch.empty(both.shape, dtype=both.dtype, pin_memory=True)
        host.copy_(both, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return cls(batch, host, ready)

    def row_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Float64 (teacher, reference) sums per batch row; the only wait for the device per batch."""
        if self.ready is not None:
            self.ready.synchronize()
        rows, n_rows = self.batch.counted_rows, len(self.batch.windows)
        values = self.logprobs.numpy()
        return sum_per_row(values[0], rows, n_rows), sum_per_row(values[1], rows, n_rows)


class ScoringEngine:
    """Use `ScoringEngine.from_pretrained(teacher, reference).score(texts)`.

    `score` is serialised by a lock: one engine runs one batch at a time (the service funnels
    concurrent requests into shared batches rather than racing them).
    """

    def __init__(
        self,
        teacher: ScoringModel,
        reference: ScoringModel,
        tokenizer: PreTrainedTokenizerBase,
        config: EngineConfig,
        fingerprint: Fingerprint,
        cache: ScoreCache | None = None,
    ) -> None:
        self.teacher, self.reference, self.tokenizer = teacher, reference, tokenizer
        self.config, self.fingerprint, self.cache = config, fingerprint, cache
        self.max_length = fingerprint.max_length
        self.window_overlap = fingerprint.window_overlap
        context = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if context is None:
            raise ConfigError(f"tokenizer of {teacher.name!r} has neither a BOS nor an EOS token to condition on")
        self.context_id: int = int(context)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else context)
        vocab = max(teacher.vocab_rows, reference.vocab_rows)
        self.chunk_tokens = config.logits_chunk_tokens or max(1, LOGITS_CHUNK_BYTES // (4 * vocab))
        self.stats = EngineStats()
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        teacher: str | Path,
        reference: str | Path,
        config: EngineConfig | None = None,
        *,
        cache: ScoreCache | str | Path | None = None,
        teacher_revision: str | None = None,
        reference_revision: str | None = None,
    ) -> ScoringEngine:
        config = config or EngineConfig()
        check_model_source(teacher, "teacher")
        check_model_source(reference, "reference")
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        tok_t = load_tokenizer(teacher, teacher_revision, "teacher")
        tok_r = load_tokenizer(reference, reference_revision, "reference")
        check_same_vocabulary(tok_t, tok_r, str(teacher), str(reference))
        t_model = ScoringModel.load(teacher, dtype=dtype, device=device, revision=teacher_revision, role="teacher")
        r_model = ScoringModel.load(
            reference, dtype=dtype, device=device, revision=reference_revision, role="reference"
        )
        limits = [x for x in (context_length(t_model.config), context_length(r_model.config)) if x]
        model_limit = min(limits) if limits else DEFAULT_MAX_LENGTH
        if config.max_length is not None and config.max_length > model_limit:
            raise ConfigError(f"max_length={config.max_length} exceeds the models' context of {model_limit} tokens")
        max_length = config.max_length or min(model_limit, DEFAULT_MAX_LENGTH)
        overlap = config.window_overlap if config.window_overlap is not None else max_length // 4
        if overlap >= max_length:
            raise ConfigError(f"window_overlap={overlap} must be smaller than max_length={max_length}")
        if config.token_budget < max_length:
            raise ConfigError(f"token_budget={config.token_budget} is smaller than one window (max_length={max_length})")
        fingerprint = Fingerprint(
            teacher=model_identity(str(teacher), teacher_revision, t_model.config),
            reference=model_identity(str(reference), reference_revision, r_model.config),
            tokenizer_sha256=tokenizer_sha256(tok_t),
            dtype=str(dtype).removeprefix("torch."),
            device_type=device.type,
            max_length=max_length,
            window_overlap=overlap,
            cpu_threads=torch.get_num_threads() if device.type == "cpu" else None,
            batch_invariant=config.batch_invariant,
        )
        if cache is not None and not isinstance(cache, ScoreCache):
            cache = ScoreCache(cache)
        log.info("loaded pair on %s/%s, max_length=%d, fingerprint %s", device, dtype, max_length, fingerprint.digest[:12])
        return cls(t_model, r_model, tok_t, config, fingerprint, cache)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return list(self.tokenizer(list(texts), add_special_tokens=False)["input_ids"])

    def score(self, texts: Sequence[str], progress: ProgressFn | None = None) -> list[DocScore]:
        """Scores in input order. Identical texts are scored once; cached ones not at all."""
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
        with self._lock:
            started = time.perf_counter()
            results = self._score_locked(texts, progress)
            self.stats.documents += len(texts)
            self.stats.seconds += time.perf_counter() - started
            return results

    def _score_locked(self, texts: Sequence[str], progress: ProgressFn | None) -> list[DocScore]:
        hashes = [content_hash(t) for t in texts]
        first_of: dict[str, int] = {}
        for i, h in enumerate(hashes):
            first_of.setdefault(h, i)
        known: dict[str, DocScore] = {}
        if self.cache is not None:
            known = self.cache.get_many(self.fingerprint.digest, list(first_of))
            self.stats.cache_hits += sum(1 for h in hashes if h in known)
        todo = [h for h in first_of if h not in known]
        fresh = self._score_unique([texts[first_of[h]] for h in todo], progress)
        computed = dict(zip(todo, fresh, strict=True))
        if self.cache is not None and computed:
            self.cache.put_many(self.fingerprint.digest, computed.items())
        known.update(computed)
        if progress is not None:
            hits = len(texts) - len(todo)
            if hits:
                progress(hits, 0)
        return [known[h] for h in hashes]

    def _score_unique(self, texts: Sequence[str], progress: ProgressFn | None) -> list[DocScore]:
        blank = [not t.strip() for t in texts]
        # Blank texts are not tokenized at all, so their windows never reach a batch.
        token_ids = self.tokenize(["" if b else t for t, b in zip(texts, blank, strict=True)])
        tokens_per_doc = np.array([len(ids) for ids in token_ids], dtype=np.int64)
        windows: list[Window] = []
        for doc, ids in enumerate(token_ids):
            windows.extend(document_windows(doc, ids, self.context_id, self.max_length, self.window_overlap))
        windows_left = np.bincount([w.doc for w in windows], minlength=len(texts))
        teacher_sum_per_doc = np.zeros(len(texts), dtype=np.float64)
        reference_sum_per_doc = np.zeros(len(texts), dtype=np.float64)
        if progress is not None:
            empty = int((tokens_per_doc == 0).sum())
            if empty:
                progress(empty, 0)
        def accumulate(done: _InFlight) -> None:
            batch = done.batch
            t_rows, r_rows = done.row_sums()
            docs = np.fromiter((w.doc for w in batch.windows), dtype=np.int64, count=len(batch.windows))
            # Sequential per-row adds (not np.add.at ordering games): a document's windows may
            # land in different batches, and float64 addition order is fixed by batch order.
            for row, doc in enumerate(docs):
                teacher_sum_per_doc[doc] += t_rows[row]
                reference_sum_per_doc[doc] += r_rows[row]
            np.subtract.at(windows_left, docs, 1)
            counted = sum(w.counted for w in batch.windows)
            self.stats.batches += 1
            self.stats.tokens += counted
            self.stats.input_tokens += batch.real_tokens
            self.stats.padded_tokens += batch.slots
            if progress is not None:
                finished = int(np.count_nonzero(windows_left[np.unique(docs)] == 0))
                progress(finished, counted)

        on_gpu = self.teacher.device.type == "cuda"
        in_flight: _InFlight | None = None
        with torch.inference_mode():
            for batch in self._batches(windows, pin_memory=on_gpu):
                started = time.perf_counter()
                queued = _InFlight.start(
                    batch,
                    self.teacher.counted_logprobs(batch, self.chunk_tokens),
                    self.reference.counted_logprobs(batch, self.chunk_tokens),
                )
                # One batch behind: on a GPU the next batch is queued before this one's results are
                # read, so the device never idles while the host sums (on a CPU both are already done).
                if in_flight is not None:
                    accumulate(in_flight)
                in_flight = queued
                self.stats.forward_seconds += time.perf_counter() - started
            if in_flight is not None:
                started = time.perf_counter()
                accumulate(in_flight)
                self.stats.forward_seconds += time.perf_counter() - started
        self.stats.scored_documents += len(texts)
        results = []
        for doc, n in enumerate(tokens_per_doc.tolist()):
            if blank[doc] and texts[doc]:
                results.append(DocScore.not_scored(STATUS_BLANK))
            elif n == 0:
                results.append(DocScore.not_scored(STATUS_EMPTY))
            else:
                results.append(
                    DocScore.from_logprobs(n, teacher_sum_per_doc[doc] / n, reference_sum_per_doc[doc] / n)
                )
        return results

    def _batches(self, windows: list[Window], *, pin_memory: bool) -> list[PaddedBatch]:
        if self.config.batch_invariant:
            # One window per batch and no padding: the kernels see shapes that only the window decides.
            return [PaddedBatch.from_windows([w], self.pad_id, pin_memory=pin_memory) for w in windows]
        return bucket_batches(windows, self.config.token_budget, self.pad_id, pin_memory=pin_memory)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
