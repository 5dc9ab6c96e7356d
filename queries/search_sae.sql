-- name: search_sae
-- Property retrieval (paper, section "retrieval"): each selected latent's activation is divided
-- by the 90th percentile of its non-zero activations in this corpus (so strongly and weakly
-- firing latents count alike), multiplied by the latent's weight, and summed per document.
-- The caller chooses the weights: exp(-r / (k * T)) for the r-th latent by label similarity
-- (T = 0.2), or a query document's own normalised activations (query by example), and passes
-- weight / p90 per latent as $scales (the percentiles come from the latent_stats table, computed
-- when the corpus was stored), so only the selected latents' activations are read.
-- A document's score is the sum of its latents' contributions (activation × scale); contributions
-- lists the $explain largest, largest first (they explain why the document matched), and
-- top_feature is the first of them.
-- Parameters: $lo, $hi (doc id range), $features (INTEGER[]), $scales (DOUBLE[]), $k (results),
-- $explain (contributions listed per document).
WITH s AS (
    SELECT unnest($features::INTEGER[]) AS feature_id, unnest($scales::DOUBLE[]) AS scale
), c AS (
    SELECT doc_id, feature_id, (value * scale)::DOUBLE AS contribution
    FROM activations JOIN s USING (feature_id)
    WHERE doc_id BETWEEN $lo AND $hi
)
SELECT doc_id, sum(contribution)::DOUBLE AS score, arg_max(feature_id, contribution) AS top_feature,
       list({'feature_id': feature_id, 'contribution': contribution} ORDER BY contribution DESC, feature_id)[1:$explain]
           AS contributions
FROM c
GROUP BY doc_id
ORDER BY score DESC, doc_id
LIMIT $k
