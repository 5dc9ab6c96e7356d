-- name: search_sae
-- Property retrieval (paper, section "retrieval"): each selected latent's activation is divided
-- by the 90th percentile of its non-zero activations in this corpus (so strongly and weakly
-- firing latents count alike), multiplied by the latent's weight, and summed per document.
-- The caller chooses the weights: exp(-r / (k * T)) for the r-th latent by label similarity
-- (T = 0.2), or a query document's own normalised activations (query by example).
-- Parameters: $lo, $hi (doc id range), $features (INTEGER[]), $weights (DOUBLE[]), $k (results).
WITH w AS (
    SELECT unnest($features::INTEGER[]) AS feature_id, unnest($weights::DOUBLE[]) AS weight
),
acts AS (
    SELECT a.doc_id, a.feature_id, a.value, w.weight
    FROM activations a JOIN w USING (feature_id)
    WHERE a.doc_id BETWEEN $lo AND $hi
),
p90 AS (
    SELECT feature_id, quantile_cont(value, 0.9) AS p90 FROM acts GROUP BY feature_id
)
SELECT doc_id, sum(weight * value / greatest(p90, 1e-12))::DOUBLE AS score,
       arg_max(feature_id, weight * value / greatest(p90, 1e-12)) AS top_feature
FROM acts JOIN p90 USING (feature_id)
GROUP BY doc_id
ORDER BY score DESC, doc_id
LIMIT $k
