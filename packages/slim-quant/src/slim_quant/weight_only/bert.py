"""A plain Paddle BERT encoder that loads Hugging Face BERT weights (safetensors).

Enough to run sentence-embedding models such as all-MiniLM-L6-v2 without transformers:
its Linears (query/key/value, attention output, intermediate, output) are ordinary
``paddle.nn.Linear`` layers, which is what weight-only quantization works on.

Example:
    >>> model = BertEncoder(BertSettings(vocab_size=100, hidden=32, layers=2, heads=4, intermediate=64))
    >>> ids = paddle.randint(0, 100, [2, 7])
    >>> list(model(ids, paddle.ones([2, 7], dtype="int64")).shape)
    [2, 32]
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slim_core import ModelLoadError, require_paddle

paddle = require_paddle()
nn = paddle.nn
F = paddle.nn.functional

__all__ = ["BertSettings", "BertEncoder", "load_hf_bert"]


@dataclass(frozen=True)
class BertSettings:
    """Shape of a BERT encoder (the fields of a Hugging Face ``config.json``)."""

    vocab_size: int = 30522
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    intermediate: int = 1536
    max_positions: int = 512
    type_vocab: int = 2
    eps: float = 1e-12


class _SelfAttention(nn.Layer):
    def __init__(self, s: BertSettings) -> None:
        super().__init__()
        self.heads, self.dim = s.heads, s.hidden // s.heads
        self.query, self.key, self.value = (nn.Linear(s.hidden, s.hidden) for _ in range(3))
        self.out = nn.Linear(s.hidden, s.hidden)
        self.norm = nn.LayerNorm(s.hidden, epsilon=s.eps)

    def _split(self, x: Any) -> Any:
        b, t = x.shape[0], x.shape[1]
        return x.reshape([b, t, self.heads, self.dim]).transpose([0, 2, 1, 3])

    def forward(self, x: Any, bias: Any) -> Any:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        att = F.softmax(paddle.matmul(q, k, transpose_y=True) / math.sqrt(self.dim) + bias, axis=-1)
        ctx = paddle.matmul(att, v).transpose([0, 2, 1, 3]).reshape([x.shape[0], x.shape[1], -1])
        return self.norm(x + self.out(ctx))


class _Block(nn.Layer):
    def __init__(self, s: BertSettings) -> None:
        super().__init__()
        self.attention = _SelfAttention(s)
        self.intermediate = nn.Linear(s.hidden, s.intermediate)
        self.output = nn.Linear(s.intermediate, s.hidden)
        self.norm = nn.LayerNorm(s.hidden, epsilon=s.eps)

    def forward(self, x: Any, bias: Any) -> Any:
        x = self.attention(x, bias)
        return self.norm(x + self.output(F.gelu(self.intermediate(x))))


class BertEncoder(nn.Layer):
    """BERT with mean pooling: ``(input_ids, attention_mask) -> [batch, hidden]`` sentence embeddings."""

    def __init__(self, settings: BertSettings) -> None:
        super().__init__()
        s = self.settings = settings
        self.word = nn.Embedding(s.vocab_size, s.hidden)
        self.position = nn.Embedding(s.max_positions, s.hidden)
        self.token_type = nn.Embedding(s.type_vocab, s.hidden)
        self.emb_norm = nn.LayerNorm(s.hidden, epsilon=s.eps)
        self.layers = nn.LayerList([_Block(s) for _ in range(s.layers)])

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        t = input_ids.shape[1]
        pos = paddle.arange(t, dtype="int64").unsqueeze(0)
        x = self.word(input_ids) + self.position(pos) + self.token_type(paddle.zeros_like(input_ids))
        x = self.emb_norm(x)
        mask = paddle.cast(attention_mask, x.dtype)
        bias = ((1.0 - mask) * -1e4).unsqueeze(1).unsqueeze(1)
        for block in self.layers:
            x = block(x, bias)
        m = mask.unsqueeze(-1)
        return (x * m).sum(axis=1) / paddle.clip(m.sum(axis=1), min=1e-9)


_RENAME = {
    "attention.self.query": "attention.query",
    "attention.self.key": "attention.key",
    "attention.self.value": "attention.value",
    "attention.output.dense": "attention.out",
    "attention.output.LayerNorm": "attention.norm",
    "intermediate.dense": "intermediate",
    "output.dense": "output",
    "output.LayerNorm": "norm",
}


def _paddle_name(hf: str) -> str | None:
    if hf.startswith("embeddings."):
        return {
            "embeddings.word_embeddings.weight": "word.weight",
            "embeddings.position_embeddings.weight": "position.weight",
            "embeddings.token_type_embeddings.weight": "token_type.weight",
            "embeddings.LayerNorm.weight": "emb_norm.weight",
            "embeddings.LayerNorm.bias": "emb_norm.bias",
        }.get(hf)
    if not hf.startswith("encoder.layer."):
        return None  # pooler and buffers such as position_ids
    _, _, idx, rest = hf.split(".", 3)
    for src, dst in _RENAME.items():
        if rest.startswith(src + "."):
            return f"layers.{idx}.{dst}{rest[len(src) :]}"
    return None


def load_hf_bert(model_dir: str | Path) -> BertEncoder:
    """Build a :class:`BertEncoder` from a Hugging Face BERT directory (``config.json`` + ``model.safetensors``).

    Needs the ``safetensors`` package (the ``llm`` extra of slim-quant).

    Raises:
        ModelLoadError: files missing, or a weight the architecture does not expect.
    """
    d = Path(model_dir)
    if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
        raise ModelLoadError(f"{d} needs config.json and model.safetensors")
    try:
        from safetensors.numpy import load_file
    except ImportError as exc:
        raise ModelLoadError("loading safetensors weights needs `pip install safetensors` (slim-quant[llm])") from exc
    cfg = json.loads((d / "config.json").read_text())
    s = BertSettings(
        vocab_size=cfg["vocab_size"],
        hidden=cfg["hidden_size"],
        layers=cfg["num_hidden_layers"],
        heads=cfg["num_attention_heads"],
        intermediate=cfg["intermediate_size"],
        max_positions=cfg["max_position_embeddings"],
        type_vocab=cfg["type_vocab_size"],
        eps=cfg.get("layer_norm_eps", 1e-12),
    )
    model = BertEncoder(s)
    own = model.state_dict()
    state = {}
    for hf, value in load_file(str(d / "model.safetensors")).items():
        name = _paddle_name(hf)
        if name is None:
            continue
        if name not in own:
            raise ModelLoadError(f"weight {hf!r} maps to {name!r}, which the model does not have")
        if hf.endswith(".weight") and value.ndim == 2 and "embeddings" not in hf:
            value = value.T  # torch Linear is [out, in]; paddle is [in, out]
        state[name] = np.ascontiguousarray(value, dtype=np.float32)
    missing = [k for k in own if k not in state]
    if missing:
        raise ModelLoadError(f"{d / 'model.safetensors'} lacks {len(missing)} weights, e.g. {missing[:3]}")
    model.set_state_dict(state)
    model.eval()
    return model
