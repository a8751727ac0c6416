"""Models: one file per model, each written bottom-up (config, small modules, the model).

Data flows ``tensors -> model -> hazards``: models read the flat (BEHRT) or hierarchical
(LSTM, hierarchical BEHRT) batch of :mod:`ehrseq.data.tensors` (MiME and GCT: the padded
diagnosis objects of :mod:`ehrseq.data.visit_objects`) and never import losses,
metrics or training code. The survival head converts hazards with the lower layer
:mod:`ehrseq.survival`, as the losses and metrics do, so that curves are computed one way.
"""

from ehrseq.models.attention import (
    FeedForward,
    MultiHeadSelfAttention,
    TransformerBlock,
    padding_mask,
    visit_causal_mask,
)
from ehrseq.models.bag import BagOfTokensSurvival
from ehrseq.models.behrt import ENCODER_INPUTS, BehrtConfig, BehrtEncoder, encoder_inputs
from ehrseq.models.gct import (
    GCT,
    ConditionalPrior,
    GCTConfig,
    GCTSurvival,
    guide_mask,
    link_auroc,
)
from ehrseq.models.hierarchical import AttentionPool, HierarchicalBehrt, HierarchicalConfig
from ehrseq.models.lora import (
    LoRALinear,
    apply_lora,
    count_parameters,
    freeze,
    merge_lora,
    unmerge_lora,
)
from ehrseq.models.lstm import LSTMConfig, VisitLSTM, hierarchical_inputs
from ehrseq.models.mime import MiME, MiMEConfig, MiMEEncoder, MiMESurvival, mime_inputs
from ehrseq.models.survival_head import BinHazardHead, HazardOutput, VisitHazardHead
from ehrseq.models.survival_model import SurvivalModel

__all__ = [
    "AttentionPool",
    "BagOfTokensSurvival",
    "BinHazardHead",
    "HazardOutput",
    "HierarchicalBehrt",
    "HierarchicalConfig",
    "LSTMConfig",
    "LoRALinear",
    "SurvivalModel",
    "VisitHazardHead",
    "VisitLSTM",
    "apply_lora",
    "count_parameters",
    "freeze",
    "hierarchical_inputs",
    "merge_lora",
    "unmerge_lora",
    "ENCODER_INPUTS",
    "BehrtConfig",
    "BehrtEncoder",
    "FeedForward",
    "MultiHeadSelfAttention",
    "TransformerBlock",
    "encoder_inputs",
    "padding_mask",
    "visit_causal_mask",
    "GCT",
    "ConditionalPrior",
    "GCTConfig",
    "GCTSurvival",
    "guide_mask",
    "link_auroc",
    "MiME",
    "MiMEConfig",
    "MiMEEncoder",
    "MiMESurvival",
    "mime_inputs",
]
