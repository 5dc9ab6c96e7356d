-- name: feature_frequencies
-- The $n most frequent latents of one corpus that are present (value > $threshold) in at least
-- $min_support documents: the candidate set for `saeembed correlate` (NPMI is only meaningful
-- for latents with enough support, and restricting the set keeps X^T X small).
-- Parameters: $lo, $hi (doc id range), $threshold, $min_support, $n.
SELECT feature_id, count(*)::BIGINT AS n_present
FROM activations
WHERE doc_id BETWEEN $lo AND $hi AND value > $threshold
GROUP BY feature_id
HAVING count(*) >= $min_support
ORDER BY n_present DESC, feature_id
LIMIT $n
