"""Token ids read from a Hugging Face tokenizer.json (byte-level BPE, as Qwen3's), so
that a test names the tokens it expects by their text instead of hard-coding ids:

    v = Vocab(model_dir)
    v.ids("The", " capital")    # each argument is exactly one token
    v.id("<|im_end|>")          # added (special) tokens by their content
"""
import json
import os


def _byte_chars():
    """Byte-level BPE writes every byte as one printable character: the printable
    Latin-1 bytes stand for themselves, the other 68 take the code points from 256 on,
    in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 256
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(extra)
            extra += 1
    return table


_BYTE_CHARS = _byte_chars()


class Vocab:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
            tj = json.load(f)
        self.added = {t["content"]: t["id"] for t in tj["added_tokens"]}
        self.vocab = tj["model"]["vocab"]

    def id(self, token):
        """The id of one token given as its text; KeyError if that text is not one token."""
        if token in self.added:
            return self.added[token]
        return self.vocab["".join(_BYTE_CHARS[b] for b in token.encode("utf-8"))]

    def ids(self, *tokens):
        return [self.id(t) for t in tokens]
