-- name: coactive_documents
-- Up to $n documents of one corpus in which both latents of each given pair are present
-- (max-pooled value > $threshold): example documents for `saeembed correlate`, and the sample
-- its same-token check recomputes token activations for. The sample is spread over the corpus
-- by a hash of the doc id rather than taken from its start.
-- Parameters: $lo, $hi (doc id range), $threshold, $fa, $fb (INTEGER[]: pair i is fa[i], fb[i]), $n.
WITH p AS (
    SELECT unnest($fa::INTEGER[]) AS fa, unnest($fb::INTEGER[]) AS fb
),
x AS (
    SELECT doc_id, feature_id FROM activations
    WHERE doc_id BETWEEN $lo AND $hi AND value > $threshold
      AND feature_id IN (SELECT fa FROM p UNION SELECT fb FROM p)
)
SELECT fa AS feature_a, fb AS feature_b, doc_id
FROM (
    SELECT p.fa, p.fb, xa.doc_id,
           row_number() OVER (PARTITION BY p.fa, p.fb ORDER BY hash(xa.doc_id), xa.doc_id) AS rk
    FROM p
    JOIN x xa ON xa.feature_id = p.fa
    JOIN x xb ON xb.feature_id = p.fb AND xb.doc_id = xa.doc_id
)
WHERE rk <= $n
ORDER BY feature_a, feature_b, rk
