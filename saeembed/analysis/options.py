"""The options of the four analyses, defined once for the Python API and the CLI.

``diff(store, ["a", "b"], fdr=1)`` and ``diff(store, ["a", "b"], DiffOptions(fdr=1))`` are the same
call; ``saeembed diff --fdr 1`` builds the same object from its flags (see :mod:`saeembed.options`).
This module imports nothing heavy, so the CLI can build its help without loading the analyses.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option

PAPER_MIN_DIFF = 0.03  # the paper keeps latents whose frequency difference exceeds 0.03 ...
PAPER_TOP = 200  # ... and the top 200 of them
PER_PHRASE = 100  # the paper's latents per keyphrase (targeted clustering and retrieval)
TEMPERATURE = 0.2  # the paper's retrieval temperature T in exp(-r / (k T))
LABEL_SIM_MAX = 0.2  # the paper's "dissimilar labels" cut for interesting correlations
UBIQUITOUS = 0.95  # a latent in this share of the documents: diff flags it, correlate leaves it out
MAX_DENSITY = UBIQUITOUS
CONTROLS = ("length", "length-cmh", "none")  # what diff and correlate hold fixed


@dataclass
class DiffOptions:
    """Options of :func:`saeembed.analysis.diff` (``saeembed diff``)."""

    target: str | None = option(None, "only this corpus as the target (default: each corpus in turn)")
    control: str = option("length", "length: compare documents of equal content-token length (longer documents have "
                                    "more latents present) by a logistic regression on log length; length-cmh: a "
                                    "Cochran-Mantel-Haenszel test over length strata instead; none: plain "
                                    "frequencies, the paper's diff",
                          choices=CONTROLS)
    paired: bool = option(False, "matched documents (same prompt, two models): a test on the pairs (McNemar; under "
                                 "length control, conditional on the pair's length ratio)")
    pair_key: str | None = option(None, "with --paired: pair documents by this meta field instead of by row (needed "
                                        "when the corpora differ in size)")
    threshold: float = option(0.0, "a latent is present in a document when its max activation is above this",
                              min=0.0)
    min_diff: float = option(PAPER_MIN_DIFF, "keep latents whose frequency difference (length-adjusted under --control "
                                             "length) is at least this")
    min_support: int = option(1, "test only latents present in at least N documents (both sides together)",
                              min=0)
    top: int | None = option(PAPER_TOP, "at most N latents per target", min=1)
    fdr: float | None = option(0.05, "keep latents with a Benjamini-Hochberg q-value at most this; 1 keeps every "
                                     "latent (the paper's setting)", min=0.0, max=1.0, min_open=True)
    examples: int = option(3, "example doc ids per side (where the latent fires most strongly)", "--n-docs", min=0)
    keep_ubiquitous: bool = option(False, "also report latents present in >= 95% of the documents of every compared "
                                          "corpus (flagged in column ubiquitous; left out by default)")


@dataclass
class CorrelateOptions:
    """Options of :func:`saeembed.analysis.correlate` (``saeembed correlate``)."""

    with_corpus: str | None = option(None, "a paired corpus (e.g. responses to CORPUS's prompts): correlate "
                                           "CORPUS's latents with its latents", "--with")
    pair_key: str | None = option(None, "with --with: pair documents by this meta field instead of by row")
    threshold: float = option(0.0, "a latent is present in a document when its max activation is above this",
                              min=0.0)
    top_features: int = option(2000, "correlate the N most frequent latents", min=1)
    min_support: int = option(5, "only latents present in at least N documents", min=0)
    min_cooccur: int = option(3, "only pairs present together in at least N documents", min=1)
    min_npmi: float = option(0.5, "only pairs with NPMI at least this", min=-1.0, max=1.0)
    max_density: float = option(MAX_DENSITY, "leave out latents present in more than this share of the documents: they "
                                      "co-occur with nearly everything, and NPMI ranks their pairs near 1 on the "
                                      "few documents that lack them (1 keeps all but those in every document)",
                                min=0.0, max=1.0)
    control: str = option("length", "length: NPMI and a test against the co-occurrence expected among documents "
                                    "of equal length (longer documents have more latents present), each latent's "
                                    "presence a logistic curve in log length; length-cmh: the same within length "
                                    "strata (Cochran-Mantel-Haenszel); none: the paper's plain NPMI",
                          choices=CONTROLS)
    label_filter: bool = option(True, "drop pairs whose labels say the same thing (label cosine >= 0.2); "
                                      "--keep-similar-labels keeps them", "--label-filter/--keep-similar-labels")
    max_label_similarity: float = option(LABEL_SIM_MAX, "label cosine at or above which a pair counts as similar",
                                         min=-1.0, max=1.0)
    peak_check: bool = option(True, "drop pairs whose two latents peak on the same or adjacent token in more than "
                                    "half the documents where both fire (from the peak positions kept at encode; no "
                                    "reader run); --no-peak-check keeps them", "--peak-check/--no-peak-check")
    token_check: bool = option(False, "drop pairs that fire on the same or adjacent tokens (recomputes token "
                                      "activations for a sample of co-active documents)")
    token_sample: int = option(5, "with --token-check: co-active documents checked per pair", min=1)
    top: int | None = option(200, "at most N pairs", min=1)


@dataclass
class ClusterOptions:
    """Options of :func:`saeembed.analysis.cluster` (``saeembed cluster``)."""

    query: str | None = option(None, "what to cluster by: a property ('sentiment', 'topic'), two ends ('A vs B'), "
                                     "categories ('Q: A, B, C') or comma-separated keyphrases (label selection, "
                                     "top N per phrase); see --select")
    features: str | None = option(None, "comma-separated latent ids instead of --query")
    unfiltered: bool = option(False, "cluster on all latents (for comparison)")
    method: str = option("spectral", "spectral (Jaccard affinity) or hdbscan (density; leaves outliers as -1)",
                         choices=("spectral", "hdbscan"))
    k: int | None = option(None, "number of clusters (spectral; default: the eigengap)", "--clusters", "--k", min=2)
    select: str = option("auto", "how --query selects latents: labels (label similarity, the paper), descriptors "
                                 "(what the latent's top documents in this corpus are about), axis (latents that vary "
                                 "between the query's two ends, 'A vs B' or proposed by the local reader), facets "
                                 "(latents that tell the query's categories apart, 'Q: A, B, C' or proposed by the "
                                 "local reader), topics (latents that follow the corpus' own topics), auto (the "
                                 "query's poles or categories as written; else the reader's when they separate the "
                                 "documents, the corpus' topics when they only follow those, else labels when the "
                                 "SAE is labelled, else descriptors)",
                         choices=("auto", "labels", "descriptors", "axis", "facets", "topics"))
    per_phrase: int = option(PER_PHRASE, "latents selected per keyphrase (with --coverage: at least this many; "
                                         "the corpus' topics read at least 1,000)",
                             min=1)
    coverage: float | None = option(None, "select latents per keyphrase in score order until this share of "
                                          "documents has at least one of them (never fewer than --per-phrase)",
                                    min=0.0, max=1.0, min_open=True)
    unplaced: str = option("unassigned", "documents with no selected latent: unassigned (cluster -1) or nearest "
                                         "(join the cluster they are most similar to on all latents)",
                           choices=("unassigned", "nearest"))
    threshold: float = option(0.0, "a latent is present in a document when its max activation is above this",
                              min=0.0)
    min_cluster_size: int = option(5, "hdbscan: the smallest group counted as a cluster", min=2)
    describe: str = option("all", "describe clusters by distinctive latents among all latents or the selected ones",
                           choices=("all", "selected"))
    n_describe: int = option(5, "distinctive latents shown per cluster", min=0)
    n_central: int = option(3, "most central documents shown per cluster", min=0)
    sample: int | None = option(None, "cluster a random sample of N documents", min=4)
    max_docs: int = option(6000, "documents clustered directly; the rest join their nearest cluster", min=4)
    seed: int = option(0, "random seed (sampling, spectral initialisation)")


@dataclass
class SearchOptions:
    """Options of :func:`saeembed.analysis.search` (``saeembed search``)."""

    k: int = option(10, "number of documents returned", "--top", "--k", min=1)
    mode: str = option("sae", "sae: latents whose labels match QUERY; dense: MiniLM; hybrid: rank fusion of both; "
                              "example: QUERY is an example text, its own latents are the query",
                       choices=("sae", "dense", "hybrid", "example"))
    select: str = option("auto", "how QUERY selects latents (sae/hybrid): descriptors (what the latent's top "
                                 "documents in this corpus are about), labels (label similarity, the paper), auto "
                                 "(descriptors for corpora of 50+ documents)",
                         choices=("auto", "labels", "descriptors"))
    n_features: int = option(PER_PHRASE, "latents selected by label or descriptor (sae/hybrid)", min=1)
    temperature: float = option(TEMPERATURE, "T of the rank weights exp(-r/(k T)) (sae/hybrid)", min=0.0,
                                min_open=True)
    cache: bool = option(True, "read and write the dense-embedding sidecar cache", "--cache/--no-cache")
    text_chars: int = option(200, "characters of each document's text shown", min=0)
    idf: bool = option(True, "example mode: weight the example's latents by their IDF in the corpus",
                       "--idf/--no-idf")
    length_adjust: bool = option(False, "sae/hybrid: rank by the latent score less what a document of that length "
                                        "scores on average (max-pooled latents grow with length)",
                                 "--length-adjust/--no-length-adjust")
    fuse: list[str] = option([], "another corpus holding the same documents (e.g. encoded with --sae doc): its "
                                 "ranking for QUERY is fused with this one's by reciprocal rank (sae/hybrid/"
                                 "example; repeatable)", multiple=True, metavar="CORPUS")
    max_example_tokens: int | None = option(None, "example mode: refuse an example text longer than this many "
                                                  "tokens before the reader runs (a server's per-request bound)",
                                            cli=False)


__all__ = ["DiffOptions", "CorrelateOptions", "ClusterOptions", "SearchOptions", "CONTROLS", "MAX_DENSITY",
           "UBIQUITOUS", "PAPER_MIN_DIFF", "PAPER_TOP", "PER_PHRASE", "TEMPERATURE", "LABEL_SIM_MAX"]
