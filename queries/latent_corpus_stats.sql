-- name: latent_corpus_stats
-- One latent in every corpus encoded with its SAE: documents where it fires (max-pooled value >
-- $threshold), the corpus size, and its largest, mean and 90th-percentile activation. The
-- browser's latent page shows these as the latent's density per corpus.
-- Parameters: $sae, $feature (INTEGER), $threshold.
SELECT c.name AS corpus, c.corpus_id, c.n_docs AS "of", count(a.doc_id)::BIGINT AS documents,
       max(a.value) AS max_value, avg(a.value) AS mean_value, quantile_cont(a.value, 0.9) AS p90
FROM corpora c
LEFT JOIN activations a
  ON a.feature_id = $feature AND a.value > $threshold
 AND a.doc_id BETWEEN (c.corpus_id::BIGINT << 32) AND ((c.corpus_id::BIGINT << 32) | 4294967295)
WHERE c.sae = $sae
GROUP BY c.corpus_id, c.name, c.n_docs
ORDER BY c.corpus_id
