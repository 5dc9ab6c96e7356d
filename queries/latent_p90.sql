-- name: latent_p90
-- The 90th percentile of each latent's non-zero max-pooled activations in one corpus: the
-- normaliser of property retrieval, also used to scale a query-by-example vector.
-- Parameters: $lo, $hi (doc id range), $features (INTEGER[]).
SELECT feature_id, quantile_cont(value, 0.9)::DOUBLE AS p90, count(*)::BIGINT AS n_present
FROM activations
WHERE doc_id BETWEEN $lo AND $hi AND feature_id IN (SELECT unnest($features::INTEGER[]))
GROUP BY feature_id
