"""Tokenized documents -> context windows -> length-bucketed, token-budget batches.

The batch type owns tokenization layout and padding; model wrappers only run forward.

Window layout (the score contract, README "What a score is"): a document's tokens x_1..x_n are
scored as the sequence s = [c] + x, c the BOS id (EOS where there is none). Inputs are s[0:n], targets
s[1:n+1], so every text token is predicted exactly once. With window length L and overlap O, window k>0
starts O tokens before the previous window ended: its first O targets were already counted and only
condition the rest (mask False); each later window adds L - O new targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, slots=True)
class Window:
    doc: int  # index of the document in the scored list
    input_ids: tuple[int, ...]  # s[a:b]
    targets: tuple[int, ...]  # s[a+1:b+1]
    skip: int  # leading targets that are context only (already counted in the previous window)

    @property
    def counted(self) -> int:
        return len(self.targets) - self.skip


def document_windows(doc: int, token_ids: Sequence[int], context_id: int, max_length: int, overlap: int) -> list[Window]:
    """Cut one tokenized document into windows that together count each of its tokens once."""
    n = len(token_ids)
    if n == 0:
        return []
    seq = (context_id, *token_ids)
    windows = []
    counted_until = 0  # targets s[1..counted_until] are counted already
    while counted_until < n:
        start = 0 if counted_until == 0 else counted_until - overlap
        stop = min(start + max_length, n)
        windows.append(
            Window(doc=doc, input_ids=seq[start:stop], targets=seq[start + 1 : stop + 1], skip=counted_until - start)
        )
        counted_until = stop
    return windows


@dataclass(frozen=True)
class PaddedBatch:
    """A right-padded batch of windows. With causal attention, right padding never influences a real
    position, so no attention mask is needed (which keeps SDPA on its fast causal path).

    The counted predictions are listed on the host when the batch is built, so the model wrapper
    gathers them with an index it already has instead of asking the device for `mask.nonzero()` (a
    wait for the GPU on every batch)."""

    windows: tuple[Window, ...]
    input_ids: torch.Tensor  # [B, T] int64
    counted_positions: torch.Tensor  # [N] int64: row * T + column of each counted prediction, row-major
    counted_targets: torch.Tensor  # [N] int64: the token each counted prediction is scored on
    counted_rows: np.ndarray  # [N] int64: batch row of each counted prediction (non-decreasing)

    @property
    def real_tokens(self) -> int:
        return sum(len(w.input_ids) for w in self.windows)

    @property
    def slots(self) -> int:
        return int(self.input_ids.numel())

    @classmethod
    def from_windows(cls, windows: Sequence[Window], pad_id: int, *, pin_memory: bool = False) -> PaddedBatch:
        """`pin_memory` (for a CUDA device) lets the copies to the device run without blocking the host."""
        width = max(len(w.input_ids) for w in windows)
        input_ids = np.full((len(windows), width), pad_id, dtype=np.int64)
        positions, targets, rows = [], [], []
        for row, w in enumerate(windows):
            m = len(w.input_ids)
            input_ids[row, :m] = w.input_ids
            positions.append(np.arange(row * width + w.skip, row * width + m, dtype=np.int64))
            targets.append(np.asarray(w.targets[w.skip :], dtype=np.int64))
            rows.append(np.full(m - w.skip, row, dtype=np.int64))
        tensors = [torch.from_numpy(a) for a in (input_ids, np.concatenate(positions), np.concatenate(targets))]
        if pin_memory:
            tensors = [t.pin_memory() for t in tensors]
        return cls(
            windows=tuple(windows),
            input_ids=tensors[0],
            counted_positions=tensors[1],
            counted_targets=tensors[2],
            counted_rows=np.concatenate(rows),
        )


# A batch closes early when the next (shorter) window would fill less than this share of its width:
# at the seam between long and short windows, padding a 40-token window to 1,400 costs more than
# the extra forward call it saves.
MIN_ROW_FILL = 0.75


def bucket_batches(
    windows: Sequence[Window], token_budget: int, pad_id: int, *, pin_memory: bool = False
) -> list[PaddedBatch]:
    """Sort windows longest first and fill each batch while rows x longest row fits the budget.

    Sorting by length keeps padding small; the sort is total (length, doc, position) so the batches,
    and hence the floats, are the same on every run.
    """
    order = sorted(range(len(windows)), key=lambda i: (-len(windows[i].input_ids), windows[i].doc, i))
    batches: list[PaddedBatch] = []
    current: list[Window] = []
    width = 0
    for i in order:
        w = windows[i]
        new_width = max(width, len(w.input_ids))
        if current and (
            new_width * (len(current) + 1) > token_budget or len(w.input_ids) < MIN_ROW_FILL * width
        ):
            batches.append(PaddedBatch.from_windows(current, pad_id, pin_memory=pin_memory))
            current, new_width = [], len(w.input_ids)
        current.append(w)
        width = new_width
    if current:
        batches.append(PaddedBatch.from_windows(current, pad_id, pin_memory=pin_memory))
    return batches
