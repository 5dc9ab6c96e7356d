-- name: feature_doc_counts
-- In how many documents of one corpus each latent is *present* (max-pooled activation > threshold).
-- This is the binarised document frequency that `saeembed diff` compares between corpora.
-- A corpus' doc ids form one contiguous range (doc_id = corpus_id << 32 | row_idx), so the
-- BETWEEN filter prunes whole row groups through DuckDB's zone maps.
-- Parameters: $lo, $hi (corpus_id << 32 and corpus_id << 32 | 0xFFFFFFFF), $threshold (FLOAT).
SELECT feature_id, count(*)::BIGINT AS n_present
FROM activations
WHERE doc_id BETWEEN $lo AND $hi AND value > $threshold
GROUP BY feature_id
