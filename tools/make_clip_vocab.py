"""Build the CLIP BPE vocabulary asset shipped in diffris-data.

Input: open_clip's `bpe_simple_vocab_16e6.txt.gz` (MIT licence), given either directly or inside
an `open_clip_torch` wheel. Output: `diffris-data/assets/clip/vocab.json.gz` and `merges.txt.gz`,
the same two files a diffusers `tokenizer/` folder holds, gzip-compressed with a fixed mtime so
the bytes are reproducible.

    pip download open_clip_torch==3.3.0 --no-deps -d ../oc-wheel
    python tools/make_clip_vocab.py ../oc-wheel/open_clip_torch-3.3.0-py3-none-any.whl

The vocabulary is laid out as CLIP's reference tokenizer lays it out: the 256 byte symbols (printable bytes first), the
same 256 symbols with the end-of-word marker `</w>`, one entry per merge rule (the first 48,894
rules of the file), then `<|startoftext|>` (49406) and `<|endoftext|>` (49407): 49,408 ids.
Standard library only.
"""

import gzip
import io
import json
import pathlib
import sys
import zipfile

N_MERGES = 49152 - 256 - 2
OUT = pathlib.Path(__file__).resolve().parent.parent / "diffris-data" / "assets" / "clip"


def byte_symbols():
    """The reversible byte -> printable character table of GPT-2/CLIP BPE, in vocabulary order:
    the printable bytes keep their own character and come first (in byte order), then every
    other byte, in byte order, is given the next unused character from U+0100 on."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + k) for k in range(len(others))]


def read_bpe_text(path):
    path = pathlib.Path(path)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            raw = wheel.read("open_clip/bpe_simple_vocab_16e6.txt.gz")
    else:
        raw = path.read_bytes()
    return gzip.decompress(raw).decode("utf-8")


def write_gz(name, text):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode("utf-8"))
    (OUT / name).write_bytes(buf.getvalue())


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    lines = read_bpe_text(sys.argv[1]).split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    assert all(len(m) == 2 for m in merges), "every merge rule has two parts"
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == 49408
    vocab = {tok: i for i, tok in enumerate(tokens)}
    assert len(vocab) == len(tokens), "token strings are unique"
    OUT.mkdir(parents=True, exist_ok=True)
    write_gz("vocab.json.gz", json.dumps(vocab, ensure_ascii=False, separators=(",", ":")))
    write_gz("merges.txt.gz", "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {OUT}")


if __name__ == "__main__":
    main()
