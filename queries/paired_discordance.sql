-- name: paired_discordance
-- Paired comparison of two corpora whose documents come in matched pairs (the same prompt
-- answered by two models): for every latent and pair stratum, the number of pairs where it is
-- present (max-pooled value > $threshold) in the A document only, in the B document only, and in
-- both. McNemar's test uses the two discordant counts; pairs where neither side has the latent are
-- concordant and need no row. The strata group pairs (saeembed: by the pair's length ratio, so the
-- test can compare the sides at equal length); give every pair stratum 0 for one group.
-- Parameters: $a_lo, $a_hi, $b_lo, $b_hi (doc id ranges: corpus_id << 32 .. | 0xFFFFFFFF),
-- $rows_a, $rows_b (BIGINT[]: row_idx of pair i in A and in B), $strata (BIGINT[]: stratum of pair i),
-- $threshold.
WITH pairs AS (
    SELECT unnest($rows_a::BIGINT[]) AS ra, unnest($rows_b::BIGINT[]) AS rb, unnest($strata::BIGINT[]) AS stratum
),
a AS (
    SELECT p.ra AS pair, p.stratum, x.feature_id
    FROM activations x JOIN pairs p ON x.doc_id = $a_lo + p.ra
    WHERE x.doc_id BETWEEN $a_lo AND $a_hi AND x.value > $threshold
),
b AS (
    SELECT p.ra AS pair, p.stratum, x.feature_id
    FROM activations x JOIN pairs p ON x.doc_id = $b_lo + p.rb
    WHERE x.doc_id BETWEEN $b_lo AND $b_hi AND x.value > $threshold
)
SELECT feature_id, coalesce(a.stratum, b.stratum) AS stratum,
       count(*) FILTER (WHERE b.pair IS NULL)::BIGINT AS only_a,
       count(*) FILTER (WHERE a.pair IS NULL)::BIGINT AS only_b,
       count(*) FILTER (WHERE a.pair IS NOT NULL AND b.pair IS NOT NULL)::BIGINT AS both
FROM a FULL OUTER JOIN b USING (pair, feature_id)
GROUP BY feature_id, coalesce(a.stratum, b.stratum)
