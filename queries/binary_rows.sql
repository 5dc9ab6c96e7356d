-- name: binary_rows
-- The (row_idx, feature_id) pairs where the given latents are present in one corpus: the
-- non-zeros of the binarised document × latent matrix, restricted to a latent subset, so the
-- analysis never materialises all d_sae columns.
-- Parameters: $lo, $hi (doc id range), $threshold, $features (INTEGER[]).
SELECT (doc_id & 4294967295)::BIGINT AS row_idx, feature_id
FROM activations
WHERE doc_id BETWEEN $lo AND $hi AND value > $threshold
  AND feature_id IN (SELECT unnest($features::INTEGER[]))
