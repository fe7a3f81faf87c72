"""Record expected CLIP token ids for the Rust tokenizer tests.

Makes `diffris-data/tests/fixtures/clip_tokenizer_cases.json` from open_clip's reference
tokenizer (`open_clip.tokenize`, which cleans text with ftfy + html.unescape, lower-cases it,
collapses whitespace, splits with CLIP's regex and applies the BPE merges).

    HF_HUB_OFFLINE=1 ../venv-ref/bin/python tools/make_tokenizer_cases.py

Needs ../venv-ref (or any venv built from tools/requirements.txt). Dev-only; CI never runs
it. The output is deterministic (same bytes on every run).

The file is a JSON list; each case is an object with
  text            the raw input string
  context_length  77 (the length every id list has)
  open_clip_clean the string open_clip actually splits (after ftfy, html.unescape, lower-casing
                  and whitespace collapsing): handy to see why ids differ from a naive tokenizer
  open_clip_ids   77 ids exactly as `open_clip.tokenize` returns them (padding 0; a text longer
                  than 75 tokens is cut to 77 ids whose last one is forced to 49407)
  sd_ids          the same ids with every position after the first 49407 set to 49407 (the
                  SD-1.x / transformers CLIPTokenizer padding convention)
  eos_index       index of the first 49407 (the "sentence" token position)
  hf_sd_ids       what transformers' CLIPTokenizer (tokenizers backend, built offline from the
                  very same BPE table, padding="max_length", truncation=True) gives; this is what a
                  `tokenizer.json` loaded by the Rust `tokenizers` crate reproduces
  hf_matches      whether hf_sd_ids == sd_ids
"""

import json
import pathlib

import open_clip
import torch
from open_clip import tokenizer as oc_tok
from transformers import CLIPTokenizer

CONTEXT_LENGTH = 77
SOT = 49406
EOT = 49407
OUT = (pathlib.Path(__file__).resolve().parent.parent
       / "diffris-data" / "tests" / "fixtures" / "clip_tokenizer_cases.json")

HUNDRED_WORDS = " ".join(
    ["the small white vehicle parked next to the long gray building near the road"] * 7
    + ["on the left side of the image there are two tall trees"]
)

CASES = [
    # plain remote-sensing referring expressions
    "the red roof building at the top left",
    "a large airplane parked on the apron in the middle",
    "the harbor with many boats at the bottom right corner",
    "baseball field",
    # punctuation, digits
    "the tennis court, next to the swimming pool.",
    "2 vehicles",
    "the 3rd storage tank, left of 12 ships.",
    "bridge (over the river) -- the longest one!?",
    "2019 vs 20.5% ; 100m x 30m",
    # mixed case
    "The LARGE Ground-Track-Field On The Right",
    # apostrophes
    "the ship's bow",
    "don't",
    "it'll be the planes' shadows we're looking at, they've I'd I'm",
    # hyphens
    "a well-known T-shaped dam",
    # whitespace: multiple spaces, tabs, newlines, leading / trailing
    "  the   windmill\tnear\n\nthe  lake  ",
    # long sentence (truncated to 77 ids)
    HUNDRED_WORDS,
    # empty string
    "",
    # curly quotes (ftfy uncurls them) and html entities (html.unescape)
    "the ship\u2019s \u201cred\u201d deck",
    "ships &amp; harbors &lt;here&gt; &#39;quoted&#39; &amp;amp;",
    # accents
    "the caf\u00e9 near the na\u00efve r\u00e9sum\u00e9 building",
    # emoji and CJK
    "the plane \u2708\ufe0f over the \U0001F3E0 house",
    "\u6e2f\u53e3\u91cc\u7684\u8239 ship",
    # mojibake that ftfy repairs ("café" encoded as UTF-8, decoded as Latin-1)
    "caf\u00c3\u00a9 roof",
    # a real-looking RRSIS-D style expression
    "The gray vehicle is on the lower right of the white vehicle",
]


def sd_padding(ids):
    """Replace everything after the first end-of-text id by the end-of-text id."""
    eos = ids.index(EOT)
    return ids[: eos + 1] + [EOT] * (len(ids) - eos - 1), eos


def hf_tokenizer():
    """transformers' CLIPTokenizer built in memory from open_clip's own BPE table."""
    st = oc_tok.SimpleTokenizer()
    vocab = {}
    for token, idx in st.encoder.items():
        if idx == SOT:
            token = "<|startoftext|>"
        elif idx == EOT:
            token = "<|endoftext|>"
        vocab[token] = idx
    merges = [tuple(pair) for pair, _ in sorted(st.bpe_ranks.items(), key=lambda kv: kv[1])]
    assert len(vocab) == 49408 and len(merges) == 48894
    return CLIPTokenizer(vocab=vocab, merges=merges)


def main():
    cleaner = oc_tok.SimpleTokenizer().clean_fn
    hf = hf_tokenizer()
    ids_all = open_clip.tokenize(CASES, context_length=CONTEXT_LENGTH)
    assert ids_all.dtype == torch.long and ids_all.shape == (len(CASES), CONTEXT_LENGTH)
    cases = []
    for text, row in zip(CASES, ids_all.tolist()):
        sd_ids, eos = sd_padding(row)
        hf_ids = hf(text, padding="max_length", truncation=True,
                    max_length=CONTEXT_LENGTH)["input_ids"]
        cases.append({
            "text": text,
            "context_length": CONTEXT_LENGTH,
            "open_clip_clean": cleaner(text),
            "open_clip_ids": row,
            "sd_ids": sd_ids,
            "eos_index": eos,
            "hf_sd_ids": hf_ids,
            "hf_matches": hf_ids == sd_ids,
        })
    first = cases[0]["open_clip_ids"][:10]
    assert first == [49406, 518, 736, 6449, 2307, 536, 518, 1253, 1823, 49407], first
    long_case = cases[CASES.index(HUNDRED_WORDS)]
    assert long_case["open_clip_ids"][76] == EOT and long_case["eos_index"] == 76
    empty = cases[CASES.index("")]
    assert empty["open_clip_ids"][:3] == [SOT, EOT, 0] and empty["eos_index"] == 1

    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(cases, ensure_ascii=True, indent=1)
    # one line per id list keeps the file short and diff-friendly
    OUT.write_text(compact_lists(text) + "\n")
    bad = [c["text"] for c in cases if not c["hf_matches"]]
    print(f"wrote {OUT} ({len(cases)} cases); transformers differs on {len(bad)}:")
    for t in bad:
        print("  ", json.dumps(t))


def compact_lists(text):
    """Re-emit the JSON with integer lists on a single line (still valid JSON)."""
    obj = json.loads(text)

    def emit(o, indent):
        pad = " " * indent
        if isinstance(o, dict):
            items = [f'{pad} {json.dumps(k)}: {emit(v, indent + 1).lstrip()}' for k, v in o.items()]
            return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(o, list) and o and all(isinstance(x, dict) for x in o):
            return pad + "[\n" + ",\n".join(emit(x, indent + 1) for x in o) + "\n" + pad + "]"
        return pad + json.dumps(o, ensure_ascii=True, separators=(",", ":"))

    return emit(obj, 0)


if __name__ == "__main__":
    main()
