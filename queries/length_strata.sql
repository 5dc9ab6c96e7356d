-- name: length_strata
-- Documents of one corpus per content-token length stratum, and their mean log content tokens.
-- Stratum = floor($per_octave * log2(content tokens)): fixed bins, $per_octave to an octave, shared by
-- every corpus, so any two corpora can be compared stratum by stratum (length-controlled diff).
-- Parameters: $corpus (corpus_id), $per_octave (strata per doubling of length; saeembed uses 4).
SELECT floor($per_octave * log2(greatest(coalesce(n_tokens, 1), 1)))::SMALLINT AS stratum,
       count(*)::BIGINT AS n_docs,
       avg(ln(greatest(coalesce(n_tokens, 1), 1)))::DOUBLE AS mean_log_tokens
FROM documents
WHERE corpus_id = $corpus
GROUP BY stratum
ORDER BY stratum
