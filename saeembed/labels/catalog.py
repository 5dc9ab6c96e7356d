"""Labels in the store: which SAE is meant, transactional writes, listing.

Labels live in ``features(sae, feature_id, label, label_source, score, density, description)``,
one row per (latent, label source), so a Neuronpedia explanation, an LLM label and the shipped
offline label of the same latent coexist; readers pick the best (see ``StoreReader.features``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from .. import store as store_mod
from ..errors import UserError
from ..store.handle import as_store, reads_store

if TYPE_CHECKING:
    from ..store.handle import Store

LABEL_SCHEMA = {"feature_id": pl.Int32, "label": pl.String, "label_source": pl.String,
                "score": pl.Float64, "density": pl.Float64, "description": pl.String}


def resolve_sae_id(store: Store, sae: str | None = None) -> dict[str, Any]:
    """The ``saes`` row meant by ``sae`` (full id, or unique prefix such as ``default``).

    Why a prefix: SAE ids carry a weight hash (``default@1a2b3c...``) nobody wants to type.
    """
    saes = store.sql("SELECT * FROM saes ORDER BY sae")
    if saes.height == 0:
        raise UserError("the store has no SAE yet; encode a corpus first (saeembed encode ...)")
    if sae is None:
        if saes.height > 1:
            raise UserError(f"the store holds {saes.height} SAEs ({', '.join(saes['sae'])}); pick one with --sae")
        return saes.row(0, named=True)
    exact = saes.filter(pl.col("sae") == sae)
    if exact.height:
        return exact.row(0, named=True)
    pref = saes.filter(pl.col("sae").str.starts_with(sae))
    if pref.height == 1:
        return pref.row(0, named=True)
    raise UserError(f"no SAE {sae!r} in this store (SAEs: {', '.join(saes['sae'])}); pass one of these to --sae")


def write_labels(store: Store | str | Path, sae: str, labels: pl.DataFrame) -> int:
    """Upsert label rows (feature_id, label, label_source[, score, density, description]) in one transaction.

    Rows with the same (sae, feature_id, label_source) are replaced, other sources are kept.
    Returns the number of rows written.
    """
    st = as_store(store)
    frame = labels
    for col, dtype in LABEL_SCHEMA.items():
        if col not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(col))
    frame = frame.select(pl.lit(sae).alias("sae"), *[pl.col(c).cast(t) for c, t in LABEL_SCHEMA.items()])
    st.close()  # the Store holds a read-only connection; DuckDB allows one writer per file
    con = store_mod.connect(st.path)
    try:
        with store_mod.transaction(con):
            con.register("_new_labels", frame.to_arrow())
            con.execute("""DELETE FROM features f USING _new_labels n
                           WHERE f.sae = n.sae AND f.feature_id = n.feature_id AND f.label_source = n.label_source""")
            con.execute("INSERT INTO features SELECT sae, feature_id, label, label_source, score, density, "
                        "description FROM _new_labels")
            con.unregister("_new_labels")
    finally:
        con.close()
    return frame.height


@reads_store
def labels_of(store: Store | str | Path, sae: str | None = None,
              feature_ids: Iterable[int] | None = None) -> pl.DataFrame:
    """Every label row (all sources) of the given latents; for reports that compare sources."""
    st = as_store(store)
    info = resolve_sae_id(st, sae)
    df = st.sql("SELECT * FROM features WHERE sae = ? ORDER BY feature_id, score DESC NULLS LAST, label_source",
                [info["sae"]])
    if feature_ids is not None:
        df = df.filter(pl.col("feature_id").is_in(list(feature_ids)))
    return df


__all__ = ["LABEL_SCHEMA", "resolve_sae_id", "write_labels", "labels_of"]
