"""Medical-code embeddings: a temporal skip-gram, scores against the generator's truth, files.

- :mod:`~ehrseq.embeddings.base`: :class:`CodeEmbedding`, the ``(concept_ids, vectors)``
  contract every embedding meets.
- :mod:`~ehrseq.embeddings.corpus`: :class:`CodeCorpus`, patients' codes in time order.
- :mod:`~ehrseq.embeddings.skipgram`: time-weighted pairs, the SGNS loss and trainer, and the
  degenerate context-only softmax shown on data.
- :mod:`~ehrseq.embeddings.truth`: groups, related pairs and the hierarchy from the generator.
- :mod:`~ehrseq.embeddings.scores`: nearest-neighbour accuracy, silhouette, relatedness power,
  ontology correlation.
- :mod:`~ehrseq.embeddings.io`: parquet and ``{concept_ids, embeddings}`` torch files.
- :mod:`~ehrseq.embeddings.reference`: gensim's word2vec on the same corpus (optional).
- :mod:`~ehrseq.embeddings.graph`: the ontology graph over an embedding's codes and a GAT
  that refines a skip-gram on it with the skip-gram's own loss (GRAM-style).
- :mod:`~ehrseq.embeddings.visits`: visit-level vectors (attention pooling, one table or one
  per code type with cross-attention) trained on Med2Vec's visit objective.
- :mod:`~ehrseq.embeddings.loinc`: LOINC-aware lab vectors (the six LOINC parts plus a value
  encoder) and per-lab decile tokens.

``visits`` and ``loinc`` are imported by name (``from ehrseq.embeddings.visits import
...``), so the package stays quick to import.

Used by the chapter on medical-code embeddings (issue #17).
"""

from ehrseq.embeddings.base import CodeEmbedding
from ehrseq.embeddings.corpus import CodeCorpus
from ehrseq.embeddings.graph import (
    GraphConfig,
    OntologyGraph,
    build_ontology_graph,
    read_ontology_tables,
    refine_skipgram,
)
from ehrseq.embeddings.io import (
    EmbeddingFileError,
    check_embedding,
    load_parquet,
    load_torch,
    save_parquet,
    save_torch,
)
from ehrseq.embeddings.scores import (
    evaluate_embedding,
    nearest_neighbour_accuracy,
    nearest_neighbour_chance,
    ontology_correlation,
    relatedness_power,
    shared_codes,
    silhouette,
)
from ehrseq.embeddings.skipgram import (
    SkipGramConfig,
    SkipGramResult,
    context_softmax_collapse,
    skipgram_pairs,
    train_skipgram,
)

__all__ = [
    "CodeEmbedding",
    "CodeCorpus",
    "check_embedding",
    "SkipGramConfig",
    "SkipGramResult",
    "train_skipgram",
    "skipgram_pairs",
    "context_softmax_collapse",
    "evaluate_embedding",
    "nearest_neighbour_accuracy",
    "nearest_neighbour_chance",
    "silhouette",
    "relatedness_power",
    "ontology_correlation",
    "shared_codes",
    "EmbeddingFileError",
    "save_parquet",
    "load_parquet",
    "save_torch",
    "load_torch",
    "OntologyGraph",
    "build_ontology_graph",
    "read_ontology_tables",
    "GraphConfig",
    "refine_skipgram",
]
