"""Benchmark: training tokens per second of our BEHRT encoder against torch's and Hugging Face's.

One training step = forward, a masked-code-style loss (the same ``Linear(d, vocab)`` head and
cross-entropy on real tokens for every model), backward, AdamW step. Same sizes for all:
d=128, 4 layers, 4 heads, feed-forward 512, dropout 0.1, batch 32, lengths 128 and 256;
patients have random lengths between L/2 and L (dynamic padding, each model gets its mask).

- ``ours``: :class:`ehrseq.models.BehrtEncoder` with every input embedding on (code, age,
  visit, position, time, domain);
- ``ours-lean``: the same with code and position embeddings only (like the two below);
- ``torch``: ``nn.TransformerEncoder`` (batch_first, norm_first, gelu) over code + position;
- ``hf-bert``: ``transformers.BertModel`` (SDPA attention), when transformers is installed.

The models are timed in turns (round-robin, ``--rounds`` x ``--iters`` steps each), so a
machine shared with other jobs slows all of them alike; the table gives the median round.
Tokens per second count padded slots (B x L); ``real tok/s`` counts real tokens only.

Usage: python benchmarks/bench_encoder.py [--lengths 128 256] [--rounds 3] [--iters 3]
       [--device cuda --bf16] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from ehrseq.models import BehrtConfig, BehrtEncoder

D, LAYERS, HEADS, FF, VOCAB, BATCH, DROPOUT = 128, 4, 4, 512, 2000, 32, 0.1


class TorchEncoder(nn.Module):
    """Code + learned position embeddings, LayerNorm, ``nn.TransformerEncoder``, final LayerNorm."""

    def __init__(self, max_len: int = 512):
        super().__init__()
        self.code = nn.Embedding(VOCAB, D)
        self.position = nn.Embedding(max_len, D)
        self.norm_in = nn.LayerNorm(D)
        self.dropout = nn.Dropout(DROPOUT)
        layer = nn.TransformerEncoderLayer(
            D, HEADS, FF, DROPOUT, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(D)

    def forward(self, batch: dict) -> torch.Tensor:
        x = self.dropout(
            self.norm_in(self.code(batch["codes"]) + self.position(batch["positions"]))
        )
        x = self.encoder(x, src_key_padding_mask=~batch["attention_mask"])  # (B, L, d)
        return self.norm(x)


class Ours(nn.Module):
    def __init__(self, lean: bool):
        super().__init__()
        extra = (
            dict(use_age=False, visit_embedding="none", time_embedding="none", use_domain=False)
            if lean
            else {}
        )
        cfg = BehrtConfig(
            vocab_size=VOCAB,
            d_model=D,
            n_layers=LAYERS,
            n_heads=HEADS,
            d_ff=FF,
            dropout=DROPOUT,
            **extra,
        )
        self.encoder = BehrtEncoder(cfg)

    def forward(self, batch: dict) -> torch.Tensor:
        keys = (
            "codes",
            "attention_mask",
            "ages",
            "visit_ids",
            "positions",
            "time_deltas",
            "domain_ids",
        )
        return self.encoder(**{k: batch[k] for k in keys})


class HFBert(nn.Module):
    def __init__(self):
        super().__init__()
        from transformers import BertConfig, BertModel

        cfg = BertConfig(
            vocab_size=VOCAB,
            hidden_size=D,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=FF,
            max_position_embeddings=512,
            hidden_dropout_prob=DROPOUT,
            attention_probs_dropout_prob=DROPOUT,
            attn_implementation="sdpa",
        )
        self.bert = BertModel(cfg, add_pooling_layer=False)

    def forward(self, batch: dict) -> torch.Tensor:
        out = self.bert(input_ids=batch["codes"], attention_mask=batch["attention_mask"].long())
        return out.last_hidden_state


def make_batch(L: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(L // 2, L + 1, (BATCH,), generator=g)
    lengths[0] = L
    am = torch.arange(L)[None] < lengths[:, None]  # (B, L)
    visit_ids = (torch.arange(L)[None] // 8 + 1).expand(BATCH, L) * am
    batch = {
        "codes": torch.randint(5, VOCAB, (BATCH, L), generator=g) * am,
        "attention_mask": am,
        "ages": (40 + 30 * torch.rand(BATCH, 1, generator=g) + visit_ids * 0.3) * am,
        "visit_ids": visit_ids,
        "positions": torch.arange(L).expand(BATCH, L) * am,
        "time_deltas": (torch.arange(L)[None] % 8 == 0).float().expand(BATCH, L) * 90.0 * am,
        "domain_ids": torch.randint(1, 8, (BATCH, L), generator=g) * am,
    }
    return {k: v.to(device) for k, v in batch.items()}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "ours":
        return Ours(lean=False)
    if name == "ours-lean":
        return Ours(lean=True)
    if name == "torch":
        return TorchEncoder()
    if name == "hf-bert":
        return HFBert()
    raise ValueError(f"unknown model {name!r}")


def train_step(model: nn.Module, head: nn.Module, opt, batch: dict, amp) -> None:
    """Forward, cross-entropy of a ``Linear(d, vocab)`` head on real tokens, backward, AdamW."""
    with amp():
        h = model(batch)  # (B, L, d)
        logits = head(h[batch["attention_mask"]])  # (N, vocab)
        loss = F.cross_entropy(logits.float(), batch["codes"][batch["attention_mask"]])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--rounds", type=int, default=3, help="turns per model")
    parser.add_argument("--iters", type=int, default=3, help="timed steps per turn")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA or CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--models", nargs="+", default=["ours", "ours-lean", "torch", "hf-bert"])
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = list(args.models)
    if "hf-bert" in names:
        try:
            import transformers  # noqa: F401
        except ImportError:
            names.remove("hf-bert")
            print("transformers not installed: hf-bert left out")

    def amp():
        if args.bf16:
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    print(
        f"device {device}, bf16 {args.bf16}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
        f"d={D}, layers={LAYERS}, heads={HEADS}, ff={FF}, batch={BATCH}, vocab={VOCAB}"
    )
    rows = []
    for L in args.lengths:
        batch = make_batch(L, device)
        real = int(batch["attention_mask"].sum())
        runs = {}
        for name in names:
            model = build(name).to(device).train()
            head = nn.Linear(D, VOCAB).to(device)
            params = [*model.parameters(), *head.parameters()]
            runs[name] = (model, head, torch.optim.AdamW(params, lr=1e-4))

        for name in names:
            for _ in range(args.warmup):
                train_step(*runs[name], batch, amp)
        sync()
        times: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(args.rounds):
            for name in names:
                t0 = time.perf_counter()
                for _ in range(args.iters):
                    train_step(*runs[name], batch, amp)
                sync()
                times[name].append((time.perf_counter() - t0) / args.iters)
        for name in names:
            sec = statistics.median(times[name])
            n_params = sum(p.numel() for p in runs[name][0].parameters())
            rows.append((L, name, n_params, sec, BATCH * L / sec, real / sec))

    header = f"{'L':>4}  {'model':<10} {'params':>9} {'s/step':>8} {'tok/s':>9} {'real tok/s':>11} {'vs torch':>9}"
    print(header)
    print("-" * len(header))
    for L, name, n_params, sec, tok, real_tok in rows:
        ref = next((r[4] for r in rows if r[0] == L and r[1] == "torch"), None)
        rel = f"{tok / ref:8.2f}x" if ref else ""
        print(
            f"{L:>4}  {name:<10} {n_params:>9,} {sec:>8.3f} {tok:>9,.0f} {real_tok:>11,.0f} {rel:>9}"
        )


if __name__ == "__main__":
    main()
