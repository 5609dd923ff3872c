"""Text classification data: a word-level tokenizer fitted on the training split only, then every
split encoded once into int64 ids [N, max_len] (padded or truncated)."""
from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from xfer.data import encode_cache
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


# Memory per token while encoding: the int64 id kept, and what the tokenizer's encodings and their Python id
# lists take while a chunk is encoded (measured: about 115 bytes a token). Chunks keep the second small.
ID_BYTES, ENCODING_BYTES, CHUNK = 8, 128, 1024


def encode_texts(tok: Tokenizer, texts: list[str]) -> torch.Tensor:
    """int64 ids [N, max_len], ``CHUNK`` texts at a time into one tensor, so the tokenizer's encodings
    (about 15 times the ids' size) never exist for all texts at once."""
    out = torch.empty((len(texts), tok.padding["length"]), dtype=torch.int64)  # fit_tokenizer pads to max_len
    for i in range(0, len(texts), CHUNK):
        out[i:i + CHUNK] = torch.tensor([e.ids for e in tok.encode_batch(texts[i:i + CHUNK])], dtype=torch.int64)
    return out


def check_memory(texts: dict[str, list[str]], max_len: int) -> None:
    """``max_len`` x the rows of every split, checked before encoding: the ids, and one chunk's encodings."""
    from xfer.machine import check_memory as check

    rows = sum(len(t) for t in texts.values())
    per_len = rows * ID_BYTES + min(rows, CHUNK) * ENCODING_BYTES  # bytes per unit of max_len
    check(f"target.max_len={max_len}", max_len * per_len,
          f"{rows:,} texts x {max_len:,} tokens (int64 ids, and the tokenizer's encodings of {CHUNK} texts)",
          lambda budget: f"target.max_len <= {int(budget // per_len):,}")


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
        check_memory(items, self.max_len)  # before anything is allocated: max_len=10**8 is a line, not exit 137
        settings = {"max_len": self.max_len, "vocab_size": self.vocab_size, "min_frequency": self.min_frequency,
                    "lowercase": self.lowercase}
        entry = None if self.read_cache_dir is None else encode_cache.entry(self.read_cache_dir, self.name,
                                                                            items, settings, __file__)
        kept = None if entry is None else encode_cache.load(entry, {s: len(t) for s, t in items.items()},
                                                             self.max_len)
        self.encoded_from = "computed" if kept is None else "cache"
        if kept is not None:
            self.tokenizer, ids = kept
            return ids
        self.tokenizer = fit_tokenizer(items["train"], self.vocab_size, self.min_frequency,
                                       self.lowercase, self.max_len)
        ids = {s: encode_texts(self.tokenizer, texts) for s, texts in items.items()}
        if entry is not None:
            encode_cache.store(entry, self.tokenizer.to_str(), self.tokenizer.get_vocab_size(), ids)
        return ids

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
