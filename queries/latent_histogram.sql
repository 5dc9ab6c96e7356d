-- name: latent_histogram
-- Histogram of one latent's max-pooled activations (documents where it fires) in every corpus
-- of its SAE: $bins equal-width bins from 0 to the largest activation, counted in SQL so a page
-- never carries a million values. Returns bin index, its edges and the count per corpus.
-- Parameters: $sae, $feature (INTEGER), $bins (INTEGER).
WITH v AS (
    SELECT c.name AS corpus, c.corpus_id, a.value
    FROM activations a
    JOIN corpora c ON c.corpus_id = (a.doc_id >> 32)
    WHERE a.feature_id = $feature AND a.value > 0 AND c.sae = $sae
),
m AS (SELECT max(value) AS hi FROM v)
SELECT corpus, b AS bin, b * m.hi / $bins AS low, (b + 1) * m.hi / $bins AS high, count(*)::BIGINT AS documents
FROM (SELECT corpus, corpus_id, least(floor(value / (SELECT hi FROM m) * $bins), $bins - 1)::INTEGER AS b FROM v) t, m
GROUP BY corpus, corpus_id, b, m.hi
ORDER BY corpus_id, b
