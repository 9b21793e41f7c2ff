"""SeqIO task registries of mtmoe: `import tasks` registers every task and mixture.

Translation (tasks/translation.py): `<corpus>_translate_<src>_<tgt>` over the
embedded corpus, OPUS-100 and FLORES-200; mixtures translate_101,
translate_all, translate_en_xx, translate_xx_en, opus100_translate_*.
Pre-training (tasks/mc4.py): mc4_span_corruption, embedded_span_corruption,
pretrain_and_translate. Languages: tasks/languages.py.

Importing reads no data (only data/embedded/stats.json, a few KB) and builds
no TensorFlow graph; seqio itself imports TensorFlow.
"""

from tasks import mc4
from tasks import translation

translation.register_all()
mc4.register_all()
