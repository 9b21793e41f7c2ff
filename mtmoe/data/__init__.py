"""The data layer: what the corpora hold and where, read without TensorFlow.

- languages   the language lookup (langcodes) and each language's FLORES-200 / OPUS-100 / mC4 code
- vocabulary  special ids (pad 0, eos 1, unk 2), language tags (`<2de>`), the SentencePiece model
- layouts     split names and the file layouts of the embedded corpus, OPUS-100 and FLORES-200
- readers     line readers for those files: lenient for training, strict for evaluation
- build/      the embedded-corpus builder and the vocabulary trainer (commands)

`tasks/` registers seqio tasks over these modules, `eval/` reads its test sets
through them and `app/` names languages with them. Nothing here imports
TensorFlow, seqio or JAX: the web UI and the evaluation harness start without them.
"""
