"""Writes sacrebleu.json: the numbers the real SacreBLEU gives for hyp.txt against ref.txt.

Run from this folder:  python3 sacrebleu_reference.py   (with `pip install sacrebleu`;
sacrebleu.json records the versions that produced it). tests/text_bleu.rs compares
vaezoo's BLEU (src/text/bleu.rs) with these numbers.
"""
import json
import platform

import sacrebleu
from sacrebleu.metrics import BLEU
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a


def read_lines(path):
    # One segment per "\n"-terminated line, empty lines kept (no universal newlines,
    # no str.splitlines, which would also split on other separators).
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    assert text.endswith("\n")
    return text[:-1].split("\n")


def score_dict(s):
    return {
        "score": s.score,
        "counts": s.counts,
        "totals": s.totals,
        "precisions": s.precisions,
        "bp": s.bp,
        "sys_len": s.sys_len,
        "ref_len": s.ref_len,
    }


hyps = read_lines("hyp.txt")
refs = read_lines("ref.txt")
assert len(hyps) == len(refs)

corpus_metric = BLEU()  # the default: tokenize="13a", smooth_method="exp", no effective order
sentence_metric = BLEU(effective_order=True)  # what sacrebleu.sentence_bleu uses
tok = Tokenizer13a()
corpus = score_dict(corpus_metric.corpus_score(hyps, [refs]))
out = {
    "produced_by": "python3 sacrebleu_reference.py",
    "sacrebleu_version": sacrebleu.__version__,
    "python_version": platform.python_version(),
    "signature": str(corpus_metric.get_signature()),  # known once a score was computed
    "corpus": corpus,
    "tokenized_13a": {
        "hyp": [tok(h.rstrip()) for h in hyps],
        "ref": [tok(r.rstrip()) for r in refs],
    },
    "sentence_bleu": [score_dict(sacrebleu.sentence_bleu(h, [r])) for h, r in zip(hyps, refs)],
    "sentence_score_no_effective_order": [
        score_dict(corpus_metric.sentence_score(h, [r])) for h, r in zip(hyps, refs)
    ],
}
with open("sacrebleu.json", "w", encoding="utf-8") as f:
    json.dump(out, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(out["signature"], out["corpus"]["score"])
