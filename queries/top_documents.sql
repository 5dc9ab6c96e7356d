-- name: top_documents
-- The documents of one corpus where each of the given latents fires most strongly (max-pooled
-- value), up to $n per latent, strongest first, ties broken by the smaller doc id (the order the
-- latent_stats table keeps, so both give the same documents): the example documents shown beside
-- diff/correlate/cluster rows when more than the 8 kept per latent are asked for.
-- Parameters: $lo, $hi (the corpus' doc id range), $features (INTEGER[]), $n (INTEGER).
SELECT feature_id, list(doc_id ORDER BY value DESC, doc_id)[1:$n] AS doc_ids
FROM activations
WHERE doc_id BETWEEN $lo AND $hi
  AND feature_id IN (SELECT unnest($features::INTEGER[]))
GROUP BY feature_id
ORDER BY feature_id
