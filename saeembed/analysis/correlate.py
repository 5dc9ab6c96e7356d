"""Latent co-occurrence: pairs of latents that fire in the same documents more than chance.

NPMI over binarised document vectors (paper): ``NPMI = log(p_ij / (p_i p_j)) / −log p_ij`` with
``p_i`` the share of documents where latent i is present and ``p_ij`` the share where both are.
It is exact: the co-occurrence counts are the sparse product ``Xᵀ X`` of the binarised CSR matrix
restricted to the ``top_features`` most frequent latents (that reach ``min_support``). The product
is computed one block of columns at a time and filtered (``min_cooccur``, ``min_npmi``) before the
next block, so memory follows the surviving pairs, not ``top_features²``; the cost follows the
non-zeros, so 10^5–10^6 documents and 10^3–10^4 latents run in seconds to minutes.

By default the product of the two frequencies is replaced by the co-occurrence expected among
documents of equal length (:mod:`.pair_length`): max-pooled presence grows with length, so plain
NPMI calls any two latents that are both commoner in long documents associated. Each pair gets a
one-sided p-value and a Benjamini–Hochberg q-value; latents present in nearly every document are
left out (:func:`near_ubiquitous`).

Interesting pairs are the *non-trivial* ones (paper): latents whose labels say different things
(MiniLM cosine of the two labels < 0.2; pairs with an unlabelled latent are kept, with a null
similarity) and, optionally (``token_check``), latents that do not fire on the same or adjacent
tokens: per-token activations are recomputed for a sample of co-active documents.

Cross mode (``with_corpus``) correlates the latents of one corpus with those of another whose
documents pair with it (prompt i ↔ response i, by row or by a meta field ``pair_key``): which
properties of a prompt go with which properties of its answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import polars as pl

from ..errors import UserError
from ..labels.search import label_vectors
from ..options import resolve
from ..store.corpusinfo import corpus_info
from ..store.handle import reads_store
from ..store.queries import run_query
from .common import binary_matrix, check_threshold, feature_labels, frequent_features, lengths_of_rows, paired_rows
from .cooccurrence import DENSE_MAX, dense_pair_counts, numba_available
from .options import CONTROLS, MAX_DENSITY, CorrelateOptions
from .pair_length import LengthCells, bh_over, npmi_against

if TYPE_CHECKING:
    from ..store.corpusinfo import CorpusInfo
    from ..store.handle import Store

SAME_TOKEN_MAX = 0.5  # pairs firing (peaking) on the same or adjacent tokens in more of their documents are dropped
PEAK_SAMPLE = 200  # co-active documents whose stored peaks are compared per pair
BLOCK_ENTRIES = 4_000_000  # co-occurrence entries computed at once (one block of columns)

COLUMNS = ["feature_a", "label_a", "feature_b", "label_b", "npmi", "n_a", "n_b", "n_ab", "expected_ab", "p_value",
           "q_value", "n_docs", "control", "label_similarity", "same_peak_share"]
NEAR_UBIQUITOUS_MAX = 8192  # latents fetched beyond --top-features, so those left out are replaced
CONTROLLED = {  # what each --control held fixed, in words: the CLI's header line and the report's summary
    "length": "controlled for document length: NPMI and a one-sided test against the co-occurrence expected if "
              "the two latents were independent among documents of equal length, each latent's presence a "
              "logistic curve in log content tokens; q_value: Benjamini–Hochberg over every pair of the "
              "correlated latents (--control length-cmh for length strata, none for the paper's plain NPMI)",
    "length-cmh": "controlled for document length: NPMI and a one-sided stratified test (the exact "
                  "Cochran–Mantel–Haenszel null, by saddlepoint) against the co-occurrence expected if the two "
                  "latents were independent within each content-token length stratum (a quarter octave wide; "
                  "with --with, both documents' lengths, an octave each); q_value: Benjamini–Hochberg over every "
                  "pair of the correlated latents",
    "none": "controlled for nothing: the paper's plain NPMI, tested (Fisher's exact test, by saddlepoint) against "
            "the product of the two frequencies; longer documents have more latents present, so two latents both "
            "commoner in long documents look associated (--control length compares documents of equal length)",
}
CROSS_MERGE = 4  # cross mode, length-cmh: each side's strata merged to an octave, so cells (a, b) stay populated


def npmi(counts_ab: np.ndarray, n_a: np.ndarray, n_b: np.ndarray, n: int) -> np.ndarray:
    """NPMI from co-occurrence counts (arrays broadcast elementwise): the paper's, against the product of
    the two frequencies (:func:`~.pair_length.npmi_against` with E = n_a n_b / n).

    Pairs that never co-occur get −1 (the limit as p_ij → 0); pairs present in every document
    (p_ij = 1) get 1.
    """
    expected = np.asarray(n_a, dtype=np.float64) * np.asarray(n_b, dtype=np.float64) / n
    return npmi_against(counts_ab, expected, float(n))


npmi_matrix = npmi  # older name


def density_cap(max_density: float, n_docs: int) -> int:
    """The most documents a latent correlate reads may be present in (``--max-density`` of ``n_docs``)."""
    return int(np.floor(max_density * int(n_docs)))


def candidate_latents(store: Store, info: CorpusInfo, threshold: float, min_support: int, top_features: int,
            max_density: float = 1.0) -> np.ndarray:
    """The ``top_features`` most frequent latents with enough support, minus those present in every
    document (they co-occur with everything, so their NPMI carries no information) and those present in
    more than ``max_density`` of the documents (:func:`near_ubiquitous`)."""
    cap = density_cap(max_density, info.n_docs)
    df = frequent_features(store, info, threshold, min_support, int(top_features) + NEAR_UBIQUITOUS_MAX)
    df = df.filter((pl.col("n_present") < int(info.n_docs)) & (pl.col("n_present") <= cap)).head(int(top_features))
    return df["feature_id"].to_numpy().astype(np.int64)


def near_ubiquitous(store: Store, corpus: str, threshold: float = 0.0, max_density: float = MAX_DENSITY) -> int:
    """How many latents correlate leaves out of ``corpus`` as present in more than ``max_density`` of its
    documents. Why they are left out: such a latent co-occurs with nearly everything, and NPMI, whose
    scale −log p_ab shrinks to 0 as p_ab nears 1, ranks a pair of them near 1 on the handful of documents
    that lack them (the same rule as diff's ``ubiquitous`` flag)."""
    info = corpus_info(store, corpus)
    cap = density_cap(max_density, info.n_docs)
    df = frequent_features(store, info, threshold, cap + 1, NEAR_UBIQUITOUS_MAX)
    return int(df.filter(pl.col("n_present") > cap).height)


NUMBA_MIN_NNZ = 1_000_000  # below this the sparse product is as fast as loading the compiled kernel


def cooccurrence_pairs(xa, xb=None, *, min_cooccur: int = 1, min_npmi: float = -1.0,
                       block_entries: int = BLOCK_ENTRIES, engine: str = "auto", cells: LengthCells | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, n_ij, npmi) of column pairs of binary CSR matrices with n_ij >= min_cooccur and NPMI >= min_npmi.

    Without ``xb`` the pairs are i < j within ``xa``; with it, every column i of ``xa`` against
    every column j of ``xb`` (same rows). Exact integer counts from either engine of
    :mod:`.cooccurrence` (``engine``: auto, numba or scipy), so both give identical pairs. With
    ``cells`` (the rows' length cells, :class:`~.pair_length.LengthCells`) NPMI is taken at equal
    length; without, it is the paper's plain NPMI.
    """
    n = xa.shape[0]
    fa, fb = xa.shape[1], (xb if xb is not None else xa).shape[1]
    if engine not in ("auto", "numba", "scipy"):
        raise UserError(f"unknown co-occurrence engine {engine!r}; use auto, numba or scipy")
    dense = engine == "numba" or (engine == "auto" and fa * fb <= DENSE_MAX and xa.nnz >= NUMBA_MIN_NNZ
                                  and numba_available())
    if not dense:
        return _blockwise_pairs(xa, xb, min_cooccur, min_npmi, block_entries, cells)
    counts = dense_pair_counts(xa, xb)
    na = np.asarray(xa.sum(axis=0)).ravel().round().astype(np.int64)
    nb = na if xb is None else np.asarray(xb.sum(axis=0)).ravel().round().astype(np.int64)
    i, j = np.nonzero(counts >= max(min_cooccur, 1))  # within: only the upper triangle was counted
    c = counts[i, j]
    v = cells.npmi(i, j, c) if cells is not None else npmi(c, na[i], nb[j], n)
    keep = v >= min_npmi
    return i[keep].astype(np.int64), j[keep].astype(np.int64), c[keep].astype(np.int64), v[keep]


def _blockwise_pairs(xa, xb, min_cooccur: int, min_npmi: float, block_entries: int, cells: LengthCells | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The sparse product ``Xᵀ X`` one block of columns at a time, filtered before the next block."""
    n = xa.shape[0]
    within = xb is None
    xb = xa if within else xb
    dtype = np.float32 if n < (1 << 24) else np.float64  # float32 counts are exact below 2^24
    xa = xa.astype(dtype, copy=False).tocsc()
    xb = xb.astype(dtype, copy=False).tocsc()
    na = np.asarray(xa.sum(axis=0)).ravel().round().astype(np.int64)
    nb = np.asarray(xb.sum(axis=0)).ravel().round().astype(np.int64)
    fa, fb = xa.shape[1], xb.shape[1]
    block = max(16, int(block_entries // max(fa, 1)))
    out_i, out_j, out_c, out_v = [], [], [], []
    for start in range(0, fb, block):
        end = min(fb, start + block)
        left = xa[:, :end] if within else xa  # within: only i < j can pair with this block
        prod = (left.T.tocsr() @ xb[:, start:end]).tocoo()
        i, j, c = prod.row.astype(np.int64), prod.col.astype(np.int64) + start, prod.data.round().astype(np.int64)
        keep = c >= min_cooccur
        if within:
            keep &= i < j
        i, j, c = i[keep], j[keep], c[keep]
        v = cells.npmi(i, j, c) if cells is not None else npmi(c, na[i], nb[j], n)
        keep = v >= min_npmi
        out_i.append(i[keep]), out_j.append(j[keep]), out_c.append(c[keep]), out_v.append(v[keep])
    cat = lambda xs, t: np.concatenate(xs).astype(t) if xs else np.zeros(0, t)  # noqa: E731
    return cat(out_i, np.int64), cat(out_j, np.int64), cat(out_c, np.int64), cat(out_v, np.float64)


@reads_store
def correlate(store: Store | str | Path, corpus: str, options: CorrelateOptions | None = None,
              **kwargs: Any) -> pl.DataFrame:
    """Pairs of latents with high NPMI, best first (ties: more co-occurrences first).

    Columns: feature_a, label_a, feature_b, label_b, npmi (at equal length under ``control``
    ``length`` or ``length-cmh``), n_a, n_b, n_ab (documents with a, with b, with both), expected_ab
    (documents expected with both under ``control``), p_value and q_value (one-sided: more together
    than expected), n_docs, control, label_similarity (MiniLM cosine of the labels; null when one is
    missing), same_peak_share (share of sampled co-active documents whose two strongest tokens, kept at
    encode, are the same or adjacent; pairs above 0.5 are dropped unless ``peak_check`` is off; null in
    cross mode and for corpora stored without positions), and with ``token_check`` same_token_share
    (share of ``token_sample`` co-active documents where the two fire on the same or adjacent tokens;
    pairs above 0.5 are dropped).
    ``label_filter`` drops pairs with label_similarity >= ``max_label_similarity``. In cross mode
    ``feature_a`` is a latent of ``corpus`` and ``feature_b`` one of ``with_corpus``, and n_docs
    counts document pairs. Options: :class:`~saeembed.analysis.options.CorrelateOptions`.
    """
    o = resolve(CorrelateOptions, options, kwargs, "correlate")
    st = store
    threshold = check_threshold(o.threshold)
    if o.top_features <= 0 or o.min_cooccur < 1 or not -1 <= o.min_npmi <= 1 or o.min_support < 0:
        raise UserError("--top-features must be > 0, --min-support >= 0, --min-cooccur >= 1 and --min-npmi in [-1, 1]")
    if o.top is not None and o.top <= 0:
        raise UserError("--top must be positive")
    if o.pair_key is not None and o.with_corpus is None:
        raise UserError("--pair-key pairs two corpora; it needs --with CORPUS")
    if o.token_check and o.with_corpus is not None:
        raise UserError("--token-check compares tokens within one document; it does not apply with --with")
    if o.control not in CONTROLS:
        raise UserError(f"unknown --control {o.control!r}; use length (equal document length, the default), "
                        "length-cmh (within length strata) or none (plain NPMI)")
    info = corpus_info(st, corpus)
    feats_a = candidate_latents(st, info, threshold, o.min_support, o.top_features, o.max_density)
    if o.with_corpus is None:
        xa, rows = binary_matrix(st, info, feats_a.tolist(), threshold, fmt="csr")
        n = len(rows)
        cells = length_cells(o.control, lengths_of_rows(st, info, rows), xa)
        i, j, c, v = cooccurrence_pairs(xa, min_cooccur=o.min_cooccur, min_npmi=o.min_npmi, cells=cells)
        na = nb = np.asarray(xa.sum(axis=0)).ravel().astype(np.int64)
        tested = len(feats_a) * (len(feats_a) - 1) // 2
        expected, variance = cells.expected(i, j)
        p_value = cells.p_values(i, j, c, expected, variance)
        swap = feats_a[i] > feats_a[j]  # report each unordered pair with feature_a < feature_b
        i, j = np.where(swap, j, i), np.where(swap, i, j)
        feats_b, sae_b = feats_a, info.sae
    else:
        info_b = corpus_info(st, o.with_corpus)
        rows_a, rows_b = paired_rows(st, info, info_b, o.pair_key)
        feats_b = candidate_latents(st, info_b, threshold, o.min_support, o.top_features, o.max_density)
        xa, _ = binary_matrix(st, info, feats_a.tolist(), threshold, rows=rows_a, fmt="csr")
        xb, _ = binary_matrix(st, info_b, feats_b.tolist(), threshold, rows=rows_b, fmt="csr")
        n = len(rows_a)
        # support and density among the paired documents only; latents in every pair say nothing
        na, nb = (np.asarray(x.sum(axis=0)).ravel().astype(np.int64) for x in (xa, xb))
        cap = density_cap(o.max_density, n)
        ka = np.flatnonzero((na >= max(o.min_support, 1)) & (na < n) & (na <= cap))
        kb = np.flatnonzero((nb >= max(o.min_support, 1)) & (nb < n) & (nb <= cap))
        xa, xb, feats_a, feats_b, na, nb = xa[:, ka], xb[:, kb], feats_a[ka], feats_b[kb], na[ka], nb[kb]
        cells = length_cells(o.control, lengths_of_rows(st, info, rows_a), xa,
                             lengths_of_rows(st, info_b, rows_b), xb)
        i, j, c, v = cooccurrence_pairs(xa, xb, min_cooccur=o.min_cooccur, min_npmi=o.min_npmi, cells=cells)
        tested = len(feats_a) * len(feats_b)
        expected, variance = cells.expected(i, j)
        p_value = cells.p_values(i, j, c, expected, variance)
        sae_b = info_b.sae
    out = pl.DataFrame({"feature_a": feats_a[i].astype(np.int32), "feature_b": feats_b[j].astype(np.int32),
                        "npmi": v, "n_a": na[i], "n_b": nb[j], "n_ab": c, "expected_ab": expected,
                        "p_value": p_value, "q_value": bh_over(p_value, tested),
                        "n_docs": np.full(len(i), n, dtype=np.int64)}).with_columns(pl.lit(o.control).alias("control"))
    out = out.sort(["npmi", "n_ab", "feature_a", "feature_b"], descending=[True, True, False, False])
    lab_a = feature_labels(st, info.sae).rename({"feature_id": "feature_a", "label": "label_a"})
    lab_b = feature_labels(st, sae_b).rename({"feature_id": "feature_b", "label": "label_b"})
    out = out.join(lab_a, on="feature_a", how="left", maintain_order="left")
    out = out.join(lab_b, on="feature_b", how="left", maintain_order="left")
    # the token check drops pairs after this, so it needs spare candidates
    wanted = o.top if o.top is None or not o.token_check else 4 * o.top
    peaks = ((lambda part: _with_peak_share(st, info, part, threshold))
             if o.peak_check and o.with_corpus is None else None)  # cross mode: the two peak in two documents
    out = _with_label_similarity(st, out, (info.sae, sae_b), o.label_filter, o.max_label_similarity, wanted, peaks)
    cols = list(COLUMNS)
    if o.token_check:
        # the check costs reader forwards, so it runs on a bounded head; dropped pairs are refilled
        # from the next candidates until ``top`` pairs survive or the candidates run out
        want = o.top if o.top is not None else out.height
        kept, offset, chunk = [], 0, max(2 * want, 4)  # one batch of forwards usually suffices
        while offset < out.height and sum(k.height for k in kept) < want:
            part = _token_check(st, info, out.slice(offset, chunk), threshold, o.token_sample)
            kept.append(part.filter(pl.col("same_token_share").is_null()
                                    | (pl.col("same_token_share") <= SAME_TOKEN_MAX)))
            offset += chunk
        out = pl.concat(kept) if kept else out.with_columns(pl.lit(None, pl.Float64).alias("same_token_share"))
        cols.append("same_token_share")
    out = out.select(cols).sort(["npmi", "n_ab", "feature_a", "feature_b"], descending=[True, True, False, False])
    return out.head(o.top) if o.top is not None else out


def length_cells(control: str, lengths_a: tuple[np.ndarray, np.ndarray], xa,
                 lengths_b: tuple[np.ndarray, np.ndarray] | None = None, xb=None) -> LengthCells:
    """The cells correlate's expectation is taken over, for ``control`` (see :mod:`.pair_length`);
    ``lengths_*`` are :func:`~.common.lengths_of_rows` of each side (side b only in cross mode)."""
    if control == "none":
        return LengthCells.single(xa, xb)
    if control == "length":
        if xb is None:
            return LengthCells.fitted(*lengths_a, xa)
        return LengthCells.fitted(*lengths_a, xa, *lengths_b, xb)
    if xb is None:
        return LengthCells.of_rows(lengths_a[0], xa)
    # the cell of a pair of documents: both documents' lengths, an octave wide each
    return LengthCells.of_rows(lengths_a[0] // CROSS_MERGE * 4096 + lengths_b[0] // CROSS_MERGE, xa, xb)


def _with_label_similarity(store: Store, pairs: pl.DataFrame, saes: tuple[str, str], label_filter: bool,
                           max_sim: float, top: int | None,
                           peaks: Callable[[pl.DataFrame], pl.DataFrame] | None = None) -> pl.DataFrame:
    """Add label_similarity (and drop similar pairs) and, with ``peaks``, same_peak_share (and drop the
    pairs that peak together: :func:`_with_peak_share`), chunk by chunk down the ranking, stopping once
    ``top`` pairs are kept."""
    vectors = [label_vectors(store, sae) for sae in saes]
    chunk = max(4 * top, 2000) if top is not None else max(pairs.height, 1)
    parts, kept, offset = [], 0, 0
    while offset < pairs.height and (top is None or kept < top):
        part = pairs.slice(offset, chunk)
        sims = pair_label_similarity(vectors, part["feature_a"].to_numpy(), part["feature_b"].to_numpy())
        part = part.with_columns(pl.Series("label_similarity", sims, pl.Float64).fill_nan(None))
        if label_filter:
            part = part.filter(pl.col("label_similarity").is_null() | (pl.col("label_similarity") < max_sim))
        part = peaks(part) if peaks is not None else part.with_columns(
            pl.lit(None, pl.Float64).alias("same_peak_share"))
        parts.append(part)
        kept += part.height
        offset += chunk
    if not parts:
        return pairs.with_columns(pl.lit(None, pl.Float64).alias("label_similarity"),
                                  pl.lit(None, pl.Float64).alias("same_peak_share"))
    return pl.concat(parts)


def _with_peak_share(store: Store, info: CorpusInfo, pairs: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """Add same_peak_share (``queries/pair_peaks.sql``: the share of up to ``PEAK_SAMPLE`` co-active
    documents where the two latents' strongest tokens, kept at encode, are the same or adjacent) and drop
    the pairs above ``SAME_TOKEN_MAX``. Null (kept) where the corpus was stored without peak positions.

    Why by default: on 800 documents each of GoEmotions, Amazon reviews and AG News, 19 or 20 of the top
    20 pairs by NPMI were two latents peaking on the same token (a document's first token, "@user"): one
    thing seen twice. The reader-run ``token_check`` sees every firing token, not only the strongest, but
    costs forwards; this costs one query (tens of milliseconds).
    """
    if pairs.height == 0:
        return pairs.with_columns(pl.lit(None, pl.Float64).alias("same_peak_share"))
    shares = run_query(store, "pair_peaks", {"lo": info.lo, "hi": info.hi, "threshold": float(threshold),
                                             "fa": pairs["feature_a"].cast(pl.Int64).to_list(),
                                             "fb": pairs["feature_b"].cast(pl.Int64).to_list(), "n": PEAK_SAMPLE})
    shares = shares.select(pl.col("feature_a").cast(pairs.schema["feature_a"]),
                           pl.col("feature_b").cast(pairs.schema["feature_b"]), "same_peak_share")
    out = pairs.join(shares, on=["feature_a", "feature_b"], how="left", maintain_order="left")
    return out.filter(pl.col("same_peak_share").is_null() | (pl.col("same_peak_share") <= SAME_TOKEN_MAX))


def pair_label_similarity(vectors: list[tuple[np.ndarray, np.ndarray]], fa: np.ndarray, fb: np.ndarray,
                          batch: int = 65536) -> np.ndarray:
    """MiniLM cosine between the labels of latent pairs (NaN where either latent has no label).

    ``vectors`` are :func:`saeembed.labels.search.label_vectors` of the two SAEs (the same one twice
    within a corpus); the label embeddings are computed once per label set and cached.
    """
    rows = []
    for (ids, _), feats in zip(vectors, (fa, fb)):
        pos = np.full(int(max(ids.max(initial=-1), feats.max(initial=-1))) + 1, -1, dtype=np.int64)
        pos[ids] = np.arange(len(ids))
        rows.append(pos[np.asarray(feats, dtype=np.int64)])
    ia, ib = rows
    sims = np.full(len(fa), np.nan)
    both = np.flatnonzero((ia >= 0) & (ib >= 0))
    ea, eb = vectors[0][1], vectors[1][1]
    for s in range(0, len(both), batch):  # bounded memory for millions of pairs
        idx = both[s:s + batch]
        sims[idx] = np.einsum("ij,ij->i", ea[ia[idx]], eb[ib[idx]])
    return sims


def coactive_documents(store: Store, info: CorpusInfo, pairs: pl.DataFrame, threshold: float,
                       n: int) -> dict[tuple[int, int], list[int]]:
    """(feature_a, feature_b) → up to ``n`` doc ids where both are present (spread over the corpus)."""
    if pairs.height == 0 or n <= 0:
        return {}
    df = run_query(store, "coactive_documents", {"lo": info.lo, "hi": info.hi, "threshold": float(threshold),
                                                  "fa": pairs["feature_a"].cast(pl.Int64).to_list(),
                                                  "fb": pairs["feature_b"].cast(pl.Int64).to_list(), "n": int(n)})
    out: dict[tuple[int, int], list[int]] = {}
    for a, b, d in df.iter_rows():
        out.setdefault((int(a), int(b)), []).append(int(d))
    return out


def same_token_share(fire_a: list[set[int]], fire_b: list[set[int]]) -> float | None:
    """Share of documents where the smaller firing set of the two latents lies mostly (>= half)
    on or next to the other's tokens: they then mark one thing, seen twice."""
    if not fire_a:
        return None
    hits = 0
    for pa, pb in zip(fire_a, fire_b):
        small, big = (pa, pb) if len(pa) <= len(pb) else (pb, pa)
        near = {p + k for p in big for k in (-1, 0, 1)}
        hits += bool(small) and len(small & near) * 2 >= len(small)
    return hits / len(fire_a)


def _token_check(store: Store, info: CorpusInfo, pairs: pl.DataFrame, threshold: float,
                 sample: int) -> pl.DataFrame:
    """Add same_token_share, from token activations recomputed for sampled co-active documents."""
    from ..highlight.recompute import token_activations

    if pairs.height == 0:
        return pairs.with_columns(pl.lit(None, pl.Float64).alias("same_token_share"))
    docs = coactive_documents(store, info, pairs, threshold, sample)
    feats = sorted(set(pairs["feature_a"].to_list()) | set(pairs["feature_b"].to_list()))
    all_docs = sorted({d for ds in docs.values() for d in ds})
    toks = token_activations(store, all_docs, feats).filter(pl.col("activation") > threshold)
    fire = {(int(d), int(f)): set(g["position"].to_list()) for (d, f), g in toks.group_by("doc_id", "feature_id")}
    shares = []
    for a, b in pairs.select("feature_a", "feature_b").iter_rows():
        ds = docs.get((a, b), [])
        shares.append(same_token_share([fire.get((d, a), set()) for d in ds], [fire.get((d, b), set()) for d in ds]))
    return pairs.with_columns(pl.Series("same_token_share", shares, pl.Float64))


__all__ = ["correlate", "CONTROLLED", "candidate_latents", "near_ubiquitous", "length_cells", "npmi",
           "cooccurrence_pairs", "coactive_documents", "pair_label_similarity", "same_token_share"]
