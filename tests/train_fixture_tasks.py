"""Registers the `fixture_*` translation tasks the trainer tests train on.

The tasks helper's fixture corpus (tests/fixtures/tasks/embedded: en<->de, fr,
pt-BR, zh-Hans, a few real sentence pairs each) with its 400-piece
SentencePiece model, registered exactly as `tasks.translation` registers the
embedded corpus, under the corpus name "fixture":
fixture_translate_en_de, ..., and the mixture fixture_translate_all.
Imported by tests/fixtures/train/tiny.gin (gin `import`), so trainer
subprocesses get the same registry.
"""

import os

import seqio

from mtmoe.data import layouts
from tasks import translation

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "tasks")
EMBEDDED = os.path.join(FIXTURES, "embedded")
SPM_PATH = os.path.join(FIXTURES, "tiny.model")


def register() -> None:
    if "fixture_translate_all" in seqio.MixtureRegistry.names():
        return
    vocabulary = seqio.SentencePieceVocabulary(SPM_PATH, extra_ids=100)
    pairs = translation.register_embedded_tasks(root=EMBEDDED, corpus="fixture", vocabulary=vocabulary)
    stats = layouts.load_stats(EMBEDDED)
    translation.register_translation_mixtures(pairs=pairs, counts={lang: stats[lang]["train"] for lang in pairs},
                                              prefix="fixture_", top=None)


register()
