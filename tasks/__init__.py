"""SeqIO task registries of mtmoe: `import tasks` registers every task and mixture.

Translation (tasks/translation.py): `<corpus>_translate_<src>_<tgt>` over the
embedded corpus, OPUS-100 and FLORES-200; mixtures translate_101,
translate_all, translate_en_xx, translate_xx_en, opus100_translate_*.
Pre-training (tasks/mc4.py): mc4_span_corruption, embedded_span_corruption,
pretrain_and_translate.

Importing this package imports seqio (and with it TensorFlow) and registers
everything at once; it reads no data but data/embedded/stats.json (a few KB).
Languages, corpus layouts, readers and the vocabulary file are `mtmoe.data`,
which the web UI, the evaluation harness and the Translator use without
TensorFlow; the corpus builder and vocabulary trainer are `mtmoe.data.build`.
"""

from __future__ import annotations

from tasks import mc4, translation

translation.register_all()
mc4.register_all()
