-- name: latent_length_strata
-- For every latent of one corpus, the documents of each content-token length stratum where it is
-- present (max-pooled value > $threshold). Kept at ingest (table latent_strata, threshold 0), so a
-- length-controlled diff reads counts instead of activations. Strata as in length_strata.sql.
-- Parameters: $corpus (corpus_id), $lo, $hi (its doc id range), $per_octave, $threshold.
WITH docs AS (
    SELECT doc_id, floor($per_octave * log2(greatest(coalesce(n_tokens, 1), 1)))::SMALLINT AS stratum
    FROM documents
    WHERE corpus_id = $corpus
)
SELECT a.feature_id, d.stratum, count(*)::BIGINT AS n_present
FROM activations a JOIN docs d USING (doc_id)
WHERE a.doc_id BETWEEN $lo AND $hi AND a.value > $threshold
GROUP BY a.feature_id, d.stratum
