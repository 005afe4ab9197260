"""Pair diagnostics: does the teacher/reference pair carry MiniPLM's signal on this corpus?

The difference score only means "what the large model knows beyond the small one" when both models
find the same text easy. If the reference ranks documents unlike the teacher, the score is mostly one
model's ranking: with a weak or untrained reference, selection becomes a teacher-perplexity filter
(it keeps what the teacher finds easy and loses the hard-but-learnable text MiniPLM is after); with a
weak teacher, it keeps what the reference finds hard (random characters included).

`pair_diagnostics` is a pure function of per-document arrays, so it can be checked against constructed
pairs. Its result goes into report.json (`diagnostics`), the CLI output and `GET /v1/jobs/{id}/diagnostics`.

Regions follow MiniPLM's picture, relative to this corpus: a model finds a document "easy" when its
mean log-prob lies above that model's median over the scored documents. easy: both above; hard:
teacher above, reference below (the documents the difference score exists to find); noise: teacher
below (the large model cannot predict it either). With the median as the cut, the noise region always
holds about half of the documents: its count says nothing, its kept share does (a selection that works
keeps little of it). The split between easy and hard is what tells pairs apart: a reference equal to
the teacher puts no document in hard; one unrelated to it puts half of the teacher-easy ones there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

# Below this many scored documents the correlations are too noisy to warn on.
MIN_DOCUMENTS = 10
# |Spearman(score, one model)| at or above this: the score ranks as that model alone.
DOMINANCE = 0.9
# Spearman(teacher, reference) below this: the two models do not agree on what is easy.
AGREEMENT = 0.3
REGIONS = ("easy", "hard", "noise")

Floats = npt.NDArray[np.float64]


def rank_correlation(a: Floats, b: Floats) -> float | None:
    """Spearman's rho (ties get their average rank); None when either side is constant, where a
    rank correlation is undefined."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    from scipy.stats import spearmanr  # here, not at import: the CLI starts faster

    return float(spearmanr(a, b).statistic)


def _warning(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def pair_warnings(
    n: int,
    teacher_vs_reference: float | None,
    score_vs_teacher: float | None,
    score_vs_reference: float | None,
    score_constant: bool,
) -> list[dict[str, str]]:
    """What looks degenerate about the pair, each with what it means and what to do."""
    if n < MIN_DOCUMENTS:
        return []
    if score_constant:
        return [
            _warning(
                "identical_pair",
                "Every document has the same score: the teacher and the reference assign the same "
                "log-probs, so they are very likely the same model. The selection is then decided by "
                "tie-breaking alone (content hash), which is a seeded random sample. Use a reference that "
                "is a smaller model than the teacher, trained on a slice of this corpus.",
            )
        ]
    warnings = []
    if score_vs_teacher is not None and abs(score_vs_teacher) >= DOMINANCE:
        warnings.append(
            _warning(
                "teacher_dominated",
                f"The score ranks documents nearly as the teacher's log-prob alone (Spearman "
                f"{score_vs_teacher:.2f}): the reference adds almost nothing, and the selection is a "
                "teacher-perplexity filter. It keeps what the teacher finds easy (repetitive, simple text) "
                "and drops hard but learnable text, which is what the difference score exists to find. "
                "Use a reference that finds the same text easy as the teacher: the same family and "
                "tokenizer, trained longer or on a slice of this corpus (or cut from the teacher's own "
                "first layers, as the embedded default does).",
            )
        )
    if score_vs_reference is not None and abs(score_vs_reference) >= DOMINANCE:
        warnings.append(
            _warning(
                "reference_dominated",
                f"The score ranks documents nearly as the reference's log-prob alone (Spearman "
                f"{score_vs_reference:.2f}): the selection keeps what the reference finds hard, noise "
                "included (random characters are hard for every model). The teacher contributes little: "
                "check that it loaded correctly and that it is much stronger than the reference on this "
                "text.",
            )
        )
    if not warnings and teacher_vs_reference is not None and teacher_vs_reference < AGREEMENT:
        warnings.append(
            _warning(
                "pair_disagrees",
                f"The teacher and the reference rank documents very differently (Spearman "
                f"{teacher_vs_reference:.2f}; MiniPLM's pairs agree on what is easy). The score is then "
                "mostly one model's ranking rather than the residual the teacher adds, and per-source "
                "shares can collapse onto one domain. Train the reference longer, on data of this corpus' "
                "distribution, or start it from the teacher's weights.",
            )
        )
    return warnings


def _region_masks(teacher: Floats, reference: Floats) -> dict[str, npt.NDArray[np.bool_]]:
    return region_masks(teacher, reference, float(np.median(teacher)), float(np.median(reference)))


def region_masks(
    teacher: Floats, reference: Floats, teacher_median: float, reference_median: float
) -> dict[str, npt.NDArray[np.bool_]]:
    """MiniPLM's regions, given each model's median over the scored documents (a chunk's worth at a time)."""
    teacher_easy = teacher > teacher_median
    reference_easy = reference > reference_median
    return {
        "easy": teacher_easy & reference_easy,
        "hard": teacher_easy & ~reference_easy,
        "noise": ~teacher_easy,
    }


def _kept_summary(mask: npt.NDArray[np.bool_], kept: npt.NDArray[np.bool_]) -> dict[str, Any]:
    return kept_summary(int(mask.sum()), int((mask & kept).sum()))


def kept_summary(documents: int, kept_documents: int) -> dict[str, Any]:
    return {
        "documents": documents,
        "kept": kept_documents,
        "kept_share": kept_documents / documents if documents else None,
    }


def correlations(teacher: Floats, reference: Floats, score: Floats) -> dict[str, float | None]:
    return {
        "teacher_vs_reference": rank_correlation(teacher, reference),
        "score_vs_teacher": rank_correlation(score, teacher),
        "score_vs_reference": rank_correlation(score, reference),
    }


def score_is_constant(n: int, score_min: float, score_max: float) -> bool:
    return n > 1 and bool(score_max - score_min <= 1e-9 * max(1.0, abs(score_min), abs(score_max)))


def assemble(
    n: int,
    rank_correlations: dict[str, float | None],
    regions: dict[str, dict[str, Any]] | None,
    score_constant: bool,
    sampled: int | None = None,
) -> dict[str, Any]:
    """The diagnostics from their parts, however they were computed (all documents in memory, or
    reductions over chunks). `sampled`: the correlations are over that many documents, not all `n`."""
    result: dict[str, Any] = {"documents": n, "rank_correlations": rank_correlations}
    if sampled is not None:
        result["rank_correlations_sample"] = sampled
    result["regions"] = regions
    result["warnings"] = pair_warnings(n, **rank_correlations, score_constant=score_constant)
    return result


def pair_diagnostics(
    *,
    teacher_logprob: Floats,
    reference_logprob: Floats,
    score: Floats,
    ok: npt.NDArray[np.bool_],
    repeats: npt.NDArray[np.int64],
    groups: npt.NDArray[np.str_] | None = None,
    sample: npt.NDArray[np.bool_] | None = None,
    stratified: bool = False,
) -> dict[str, Any]:
    """Rank correlations, regions and (with `groups`, one label per document) per-group shares over
    the scored documents, and the warnings they raise. A document counts as kept when repeated at
    least once; `output_share` counts repeats. With `sample` (a mask), the rank correlations are
    computed over the sampled scored documents only (the rest over all).

    Correlations and regions need both log-probs, so they cover the documents the pair scored; those
    a proxy scored (no log-probs: a proxy job, or a cascade outside its band) are counted apart, in
    `proxy_scored` (present only when there are some, so a pair job's report is unchanged). In a
    cascade the pair scored only the documents near the threshold, and the figures describe those.
    Groups cover every scored document, whichever scorer scored it."""
    pair_scored = ok & np.isfinite(teacher_logprob) & np.isfinite(reference_logprob)
    teacher, reference, value = teacher_logprob[pair_scored], reference_logprob[pair_scored], score[pair_scored]
    kept = repeats[pair_scored] > 0
    n = int(pair_scored.sum())
    if sample is None:
        corr = correlations(teacher, reference, value)
    else:
        s = pair_scored & sample
        corr = correlations(teacher_logprob[s], reference_logprob[s], score[s])
    score_constant = n > 1 and bool(np.ptp(value) <= 1e-9 * max(1.0, float(np.abs(value).max())))
    regions = (
        {name: _kept_summary(mask, kept) for name, mask in _region_masks(teacher, reference).items()} if n else None
    )
    result = assemble(n, corr, regions, score_constant, None if sample is None else int((pair_scored & sample).sum()))
    proxy_scored = int((ok & np.isfinite(score)).sum()) - n
    if proxy_scored:
        result["proxy_scored"] = proxy_scored
    if groups is not None:
        labels = groups[ok]
        kept_repeats = repeats[ok]
        # Within a group, rho is taken over its sampled documents when the whole is sampled.
        in_sample = pair_scored if sample is None else pair_scored & sample
        sample_labels, sample_teacher, sample_reference = groups[in_sample], teacher_logprob[in_sample], reference_logprob[in_sample]
        counts = {}
        for label in sorted(set(labels.tolist())):
            mask = labels == label
            in_pair = sample_labels == label
            counts[label] = GroupCounts(
                int(mask.sum()),
                int((kept_repeats[mask] > 0).sum()),
                int(kept_repeats[mask].sum()),
                rank_correlation(sample_teacher[in_pair], sample_reference[in_pair])
                if in_pair.sum() >= MIN_DOCUMENTS
                else None,
            )
        with_groups(result, counts, corr["teacher_vs_reference"], stratified)
    return result


@dataclass(frozen=True)
class GroupCounts:
    """One group's figures over its scored documents (in memory, or merged from chunks)."""

    documents: int
    kept: int  # repeated at least once
    repeats: int
    teacher_vs_reference: float | None  # over its (sampled) pair-scored documents; None under MIN_DOCUMENTS


def with_groups(
    result: dict[str, Any], counts: dict[str, GroupCounts], overall: float | None, stratified: bool
) -> None:
    """Adds the per-group shares (`groups`, by label) to the diagnostics, and revises the warnings."""
    scored = sum(g.documents for g in counts.values())
    total_repeats = sum(g.repeats for g in counts.values())
    per_group = {
        label: {
            **kept_summary(g.documents, g.kept),
            "input_share": g.documents / scored,
            "output_share": g.repeats / total_repeats if total_repeats else None,
            "teacher_vs_reference": g.teacher_vs_reference,
        }
        for label, g in sorted(counts.items())
    }
    result["groups"] = per_group
    result["warnings"] = _within_groups(result["warnings"], overall, per_group, stratified)


def _within_groups(
    warnings: list[dict[str, str]], overall: float | None, per_group: dict[str, dict[str, Any]], stratified: bool
) -> list[dict[str, str]]:
    """A pair that disagrees over the corpus may agree inside each group: the models then differ on
    which group is easy (a teacher that knows one source well), not on which text within a source is.
    The difference score then still ranks well within groups, and stratifying puts it to use (a job
    that already stratifies by these groups needs no warning)."""
    within = {g: v["teacher_vs_reference"] for g, v in per_group.items() if v["teacher_vs_reference"] is not None}
    if overall is None or not within or not any(w["code"] == "pair_disagrees" for w in warnings):
        return warnings
    sizes = {g: per_group[g]["documents"] for g in within}
    mean = sum(within[g] * sizes[g] for g in within) / sum(sizes.values())
    if mean < AGREEMENT:
        return warnings
    if stratified:
        return [w for w in warnings if w["code"] != "pair_disagrees"]
    listed = ", ".join(f"{g} {r:+.2f}" for g, r in within.items())
    return [w for w in warnings if w["code"] != "pair_disagrees"] + [
        _warning(
            "pair_disagrees_across_groups",
            f"The teacher and the reference rank documents very differently over the corpus (Spearman "
            f"{overall:.2f}) but agree within each group ({listed}; mean {mean:.2f}): they disagree on which "
            "group is easy, not on which text within a group is. Over the whole corpus the score then mostly "
            "sorts groups, and the selection collapses onto the group the teacher knows best. Stratify by "
            "this field (--stratify-by) so that documents are re-ranked within each group, where the score "
            "carries the pair's signal.",
        )
    ]


def describe(diagnostics: dict[str, Any]) -> list[str]:
    """The diagnostics as lines for a terminal: correlations, regions, groups, then the warnings."""

    def fmt(value: float | None) -> str:
        return "undefined" if value is None else f"{value:+.2f}"

    corr = diagnostics["rank_correlations"]
    lines = [
        "Pair diagnostics (Spearman"
        + (f", over the {diagnostics['documents']} documents the pair scored" if diagnostics.get("proxy_scored") else "")
        + "): teacher vs reference "
        f"{fmt(corr['teacher_vs_reference'])}, score vs teacher {fmt(corr['score_vs_teacher'])}, "
        f"score vs reference {fmt(corr['score_vs_reference'])}"
    ]
    if diagnostics["regions"]:
        lines.append(
            "Regions (kept/documents): "
            + ", ".join(f"{name} {r['kept']}/{r['documents']}" for name, r in diagnostics["regions"].items())
        )
    if diagnostics.get("groups"):
        lines.append(
            "Kept per group (teacher vs reference within it): "
            + ", ".join(
                f"{name} {g['kept']}/{g['documents']} ({fmt(g.get('teacher_vs_reference'))})"
                for name, g in diagnostics["groups"].items()
            )
        )
    lines += [f"WARNING ({w['code']}): {w['message']}" for w in diagnostics["warnings"]]
    return lines
