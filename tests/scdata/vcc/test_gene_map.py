"""Mapping perturbation data's genes onto the store's axis, on real-looking tables."""

import numpy as np

from scdata.vcc.gene_map import map_genes, map_targets, strip_version

AXIS_IDS = ["ENSG00000141510", "ENSG00000012048", "ENSG00000139618", "ENSG00000157764", "ENSG00000284733",
            "ENSG00000284734"]
AXIS_SYMBOLS = ["TP53", "BRCA1", "BRCA2", "BRAF", "OR4F29", "OR4F29"]  # OR4F29 twice: an alias collision


def test_ids_with_version_suffixes_then_symbols_then_reports():
    source_ids = ["ENSG00000141510.17", "ENSG00000012048.23", None, "", "ENSG99999999999.1", np.nan, "ENSG00000157764"]
    source_symbols = ["TP53", "BRCA1", "brca2", "OR4F29", "MADEUP1", "NOTAGENE", "BRAF-alias"]
    m = map_genes(source_ids, source_symbols, AXIS_IDS, AXIS_SYMBOLS)
    assert m.columns.tolist() == [0, 1, 2, -1, -1, -1, 3]
    assert (m.by_id, m.by_symbol) == (3, 1)  # BRAF by its ID although its symbol is an alias
    assert m.ambiguous == ["OR4F29"] and m.unmapped == ["MADEUP1", "NOTAGENE"] and m.duplicated == []
    assert m.summary()["mapped"] == 4


def test_duplicated_source_genes_keep_the_first():
    m = map_genes(["ENSG00000141510.1", None], ["TP53", "TP53"], AXIS_IDS, AXIS_SYMBOLS)
    assert m.columns.tolist() == [0, -1] and m.duplicated == ["TP53"]


def test_targets_follow_their_gene_and_unknown_targets_are_reported():
    symbols = ["TP53", "BRCA1", "GHOST"]
    m = map_genes(["ENSG00000141510", "ENSG00000012048", None], symbols, AXIS_IDS, AXIS_SYMBOLS)
    positions, missing = map_targets(["non-targeting", "BRCA1", "TP53", "BRCA1", "GHOST", "NOTINFILE"],
                                     "non-targeting", symbols, m)
    assert positions == {"non-targeting": -1, "BRCA1": 1, "TP53": 0}
    assert missing == ["GHOST", "NOTINFILE"]


def test_strip_version():
    assert strip_version("ENSG00000141510.17") == "ENSG00000141510"
    assert strip_version(" ENSG00000141510 ") == "ENSG00000141510"
