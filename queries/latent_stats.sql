-- name: latent_stats
-- Per-latent statistics of one corpus, computed once when the corpus is stored (and kept in the
-- table latent_stats): the number of documents where the latent is present (max-pooled value > 0),
-- the 90th percentile of its non-zero activations (property retrieval's normaliser), its largest
-- activation, and the ids of the 8 documents where it fires most strongly (ties: smaller doc id
-- first). diff, search and correlate read these rows instead of every activation of the corpus.
-- Parameters: $lo, $hi (the corpus' doc id range).
SELECT feature_id,
       count(*) FILTER (WHERE value > 0)::BIGINT AS n_present,
       quantile_cont(value, 0.9)::DOUBLE AS p90,
       max(value)::FLOAT AS max_value,
       list(doc_id ORDER BY value DESC, doc_id)[1:8] AS top_docs
FROM activations
WHERE doc_id BETWEEN $lo AND $hi
GROUP BY feature_id
ORDER BY feature_id
