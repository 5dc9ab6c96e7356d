-- name: cluster_feature_counts
-- For a partition of one corpus' documents into groups (clusters), the number of documents of
-- each group in which each latent is present (max-pooled value > $threshold): the in-group
-- frequencies that describe clusters by their most distinctive latents. Documents not listed
-- are ignored.
-- Parameters: $lo, $hi (doc id range), $doc_ids (BIGINT[]), $groups (BIGINT[]: group of doc i),
-- $threshold.
WITH m AS (
    SELECT unnest($doc_ids::BIGINT[]) AS doc_id, unnest($groups::BIGINT[]) AS grp
)
SELECT m.grp, a.feature_id, count(*)::BIGINT AS n_present
FROM activations a JOIN m USING (doc_id)
WHERE a.doc_id BETWEEN $lo AND $hi AND a.value > $threshold
GROUP BY m.grp, a.feature_id
