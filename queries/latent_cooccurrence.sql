-- name: latent_cooccurrence
-- The latents that fire in the same documents of one corpus as latent $feature: for each, the
-- documents with both (n_ab, at least $min_cooccur) and the documents with it (n_b). The
-- browser's latent page turns these counts into NPMI (saeembed.analysis.correlate.npmi).
-- Parameters: $lo, $hi (doc id range), $feature (INTEGER), $threshold, $min_cooccur.
WITH docs AS (
    SELECT doc_id FROM activations
    WHERE feature_id = $feature AND doc_id BETWEEN $lo AND $hi AND value > $threshold
),
cand AS (
    SELECT a.feature_id, count(*)::BIGINT AS n_ab
    FROM activations a SEMI JOIN docs ON a.doc_id = docs.doc_id
    WHERE a.doc_id BETWEEN $lo AND $hi AND a.value > $threshold AND a.feature_id <> $feature
    GROUP BY a.feature_id
    HAVING count(*) >= $min_cooccur
)
SELECT cand.feature_id, cand.n_ab, f.n_b
FROM cand
JOIN (SELECT feature_id, count(*)::BIGINT AS n_b FROM activations
      WHERE doc_id BETWEEN $lo AND $hi AND value > $threshold AND feature_id IN (SELECT feature_id FROM cand)
      GROUP BY feature_id) f USING (feature_id)
ORDER BY cand.feature_id
