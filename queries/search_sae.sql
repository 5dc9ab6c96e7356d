-- name: search_sae
-- Property retrieval (paper, section "retrieval"): each selected latent's activation is divided
-- by the 90th percentile of its non-zero activations in this corpus (so strongly and weakly
-- firing latents count alike), multiplied by the latent's weight, and summed per document.
-- The caller chooses the weights: exp(-r / (k * T)) for the r-th latent by label similarity
-- (T = 0.2), or a query document's own normalised activations (query by example).
-- The selected latents' activations are read once (MATERIALIZED) and serve both the percentiles
-- and the scores; top_feature is the latent contributing most to a document's score.
-- Parameters: $lo, $hi (doc id range), $features (INTEGER[]), $weights (DOUBLE[]), $k (results).
WITH w AS (
    SELECT unnest($features::INTEGER[]) AS feature_id, unnest($weights::DOUBLE[]) AS weight
),
acts AS MATERIALIZED (
    SELECT doc_id, feature_id, value FROM activations
    WHERE doc_id BETWEEN $lo AND $hi AND feature_id IN (SELECT feature_id FROM w)
),
scale AS (
    SELECT feature_id, any_value(weight) / greatest(quantile_cont(value, 0.9), 1e-12) AS scale
    FROM acts JOIN w USING (feature_id)
    GROUP BY feature_id
)
SELECT doc_id, sum(value * scale)::DOUBLE AS score, arg_max(feature_id, value * scale) AS top_feature
FROM acts JOIN scale USING (feature_id)
GROUP BY doc_id
ORDER BY score DESC, doc_id
LIMIT $k
