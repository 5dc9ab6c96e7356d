-- name: top_documents
-- The documents of one corpus where each of the given latents fires most strongly (max-pooled
-- value), up to $n per latent, strongest first: the example documents shown beside
-- diff/correlate/cluster rows. max_by(…, $n) keeps a small heap per latent instead of sorting
-- every activation of the latent (a window function does), which matters at 10^6 documents.
-- Parameters: $lo, $hi (the corpus' doc id range), $features (INTEGER[]), $n (INTEGER).
SELECT feature_id, max_by(doc_id, value, $n) AS doc_ids
FROM activations
WHERE doc_id BETWEEN $lo AND $hi
  AND feature_id IN (SELECT unnest($features::INTEGER[]))
GROUP BY feature_id
ORDER BY feature_id
