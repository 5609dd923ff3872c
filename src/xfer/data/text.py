"""Text classification data: a word-level tokenizer fitted on the training split only, then every
split encoded once into int64 ids [N, max_len] (padded or truncated)."""
from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from xfer.data.module import SplitDataModule

PAD, UNK = "[PAD]", "[UNK]"


def fit_tokenizer(texts: list[str], vocab_size: int, min_frequency: int, lowercase: bool,
                  max_len: int) -> Tokenizer:
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase,
                                                clean_text=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=[PAD, UNK], show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(pad_id=tok.token_to_id(PAD), pad_token=PAD, length=max_len)
    return tok


def encode_texts(tok: Tokenizer, texts: list[str]) -> torch.Tensor:
    return torch.tensor([e.ids for e in tok.encode_batch(texts)], dtype=torch.int64)


class TextDataModule(SplitDataModule):
    modality = "text"

    def __init__(self, name: str, max_len: int = 64, vocab_size: int = 20000, min_frequency: int = 1,
                 lowercase: bool = True, **kwargs: Any):
        super().__init__(name, **kwargs)
        if max_len < 1 or vocab_size < 3:
            raise ValueError(f"{name}: max_len={max_len} and vocab_size={vocab_size}; allowed: "
                             f"max_len >= 1, vocab_size >= 3")
        self.max_len, self.vocab_size, self.min_frequency, self.lowercase = max_len, vocab_size, min_frequency, lowercase
        self.tokenizer: Tokenizer | None = None

    def encode(self, items: dict[str, Any]) -> dict[str, torch.Tensor]:
        self.tokenizer = fit_tokenizer(items["train"], self.vocab_size, self.min_frequency,
                                       self.lowercase, self.max_len)
        return {s: encode_texts(self.tokenizer, texts) for s, texts in items.items()}

    def spec_fields(self) -> dict[str, Any]:
        assert self.tokenizer is not None
        return {"vocab_size": self.tokenizer.get_vocab_size(), "seq_len": self.max_len,
                "pad_id": self.tokenizer.token_to_id(PAD)}


def id_translator(source: TextDataModule, target: TextDataModule):
    """A map from ``target``'s token ids [B, target.max_len] to ``source``'s [B, source.max_len]: each word
    through the two vocabularies (a word the source never saw becomes its ``[UNK]``), padded or cut to the
    source's length. Each data module fits its own tokenizer, so the source adapter reads target text only
    through this."""
    assert source.tokenizer is not None and target.tokenizer is not None
    src_vocab = source.tokenizer.get_vocab()
    unk, pad = src_vocab[UNK], src_vocab[PAD]
    table = torch.full((target.tokenizer.get_vocab_size(),), unk, dtype=torch.int64)
    for word, i in target.tokenizer.get_vocab().items():
        table[i] = src_vocab.get(word, unk)
    table[target.tokenizer.token_to_id(PAD)] = pad

    def translate(ids: torch.Tensor) -> torch.Tensor:
        out = table.to(ids.device)[ids.clamp(0, len(table) - 1)]
        if out.shape[1] >= source.max_len:
            return out[:, :source.max_len]
        return torch.cat([out, out.new_full((out.shape[0], source.max_len - out.shape[1]), pad)], dim=1)

    return translate
