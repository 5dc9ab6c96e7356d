-- name: search_sae
-- Property retrieval (paper, section "retrieval"): each selected latent's activation is divided
-- by the 90th percentile of its non-zero activations in this corpus (so strongly and weakly
-- firing latents count alike), multiplied by the latent's weight, and summed per document.
-- The caller chooses the weights: exp(-r / (k * T)) for the r-th latent by label similarity
-- (T = 0.2), or a query document's own normalised activations (query by example), and passes
-- weight / p90 per latent as $scales (the percentiles come from the latent_stats table, computed
-- when the corpus was stored), so only the selected latents' activations are read.
-- top_feature is the latent contributing most to a document's score.
-- Parameters: $lo, $hi (doc id range), $features (INTEGER[]), $scales (DOUBLE[]), $k (results).
WITH s AS (
    SELECT unnest($features::INTEGER[]) AS feature_id, unnest($scales::DOUBLE[]) AS scale
)
SELECT doc_id, sum(value * scale)::DOUBLE AS score, arg_max(feature_id, value * scale) AS top_feature
FROM activations JOIN s USING (feature_id)
WHERE doc_id BETWEEN $lo AND $hi
GROUP BY doc_id
ORDER BY score DESC, doc_id
LIMIT $k
