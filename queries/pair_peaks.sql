-- name: pair_peaks
-- For each given pair of latents of one corpus: among up to $n of the documents where both are present
-- (max-pooled value > $threshold), spread over the corpus by a hash of the doc id, how many have the two
-- latents' strongest tokens (peak_pos, kept at encode) on the same or adjacent positions. Two latents
-- that peak together mark one thing seen twice, not two things that co-occur: correlate's stored
-- same-token check. Documents without a stored peak are left out.
-- Parameters: $lo, $hi (doc id range), $threshold, $fa, $fb (INTEGER[]: pair i is fa[i], fb[i]), $n.
WITH p AS (
    SELECT unnest($fa::INTEGER[]) AS fa, unnest($fb::INTEGER[]) AS fb
),
x AS (
    SELECT doc_id, feature_id, peak_pos FROM activations
    WHERE doc_id BETWEEN $lo AND $hi AND value > $threshold AND peak_pos IS NOT NULL
      AND feature_id IN (SELECT fa FROM p UNION SELECT fb FROM p)
),
both_present AS (
    SELECT p.fa, p.fb, abs(xa.peak_pos - xb.peak_pos) <= 1 AS together,
           row_number() OVER (PARTITION BY p.fa, p.fb ORDER BY hash(xa.doc_id), xa.doc_id) AS rk
    FROM p
    JOIN x xa ON xa.feature_id = p.fa
    JOIN x xb ON xb.feature_id = p.fb AND xb.doc_id = xa.doc_id
)
SELECT fa AS feature_a, fb AS feature_b, count(*)::BIGINT AS n_checked,
       avg(together::INTEGER)::DOUBLE AS same_peak_share
FROM both_present
WHERE rk <= $n
GROUP BY fa, fb
