-- name: doc_top_latents
-- The $k most characteristic latents of every document of one corpus: max-pooled activation over
-- the latent's 90th percentile in the corpus (the normalisation `search` uses) times its IDF
-- log((N + 1) / (n + 1)), so latents that fire everywhere (syntax, position) do not crowd out
-- the ones that say something about this document. For `saeembed atlas`.
-- Parameters: $lo, $hi (doc id range), $n_docs, $k.
WITH a AS (
    SELECT doc_id, feature_id, value FROM activations WHERE doc_id BETWEEN $lo AND $hi AND value > 0
),
s AS (
    SELECT feature_id, quantile_cont(value, 0.9) AS p90, count(*) AS n FROM a GROUP BY feature_id
)
SELECT a.doc_id, max_by(a.feature_id, a.value / greatest(s.p90, 1e-12) * ln(($n_docs + 1.0) / (s.n + 1.0)), $k)
       AS feature_ids
FROM a JOIN s USING (feature_id)
GROUP BY a.doc_id
ORDER BY a.doc_id
