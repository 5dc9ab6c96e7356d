-- name: top_documents
-- The documents of one corpus where each of the given latents fires most strongly (max-pooled
-- value), up to $n per latent: the example documents shown beside diff/correlate/cluster rows.
-- Parameters: $lo, $hi (the corpus' doc id range), $features (INTEGER[]), $n (INTEGER).
SELECT feature_id, doc_id, value
FROM (
    SELECT feature_id, doc_id, value,
           row_number() OVER (PARTITION BY feature_id ORDER BY value DESC, doc_id) AS rk
    FROM activations
    WHERE doc_id BETWEEN $lo AND $hi
      AND feature_id IN (SELECT unnest($features::INTEGER[]))
)
WHERE rk <= $n
ORDER BY feature_id, rk
