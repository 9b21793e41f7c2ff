"""SeqIO task registries of mtmoe: `import tasks` registers every task and mixture.

Translation (tasks/translation.py): `<corpus>_translate_<src>_<tgt>` over the
embedded corpus, OPUS-100 and FLORES-200; mixtures translate_101,
translate_all, translate_en_xx, translate_xx_en, opus100_translate_*.
Pre-training (tasks/mc4.py): mc4_span_corruption, embedded_span_corruption,
pretrain_and_translate. Languages: tasks/languages.py.

Registration reads no data (only data/embedded/stats.json, a few KB) and
builds no TensorFlow graph. It happens as soon as seqio is imported: at once
if it already is, else right after its import. So `import tasks` followed by
any use of seqio's registries finds everything, while the TensorFlow-free
modules (`tasks.languages`, `tasks.vocab.load_sentencepiece`, the corpus
builder), which the web UI and Translator use, never pull in TensorFlow.
`tasks.register()` does it explicitly.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

_registered = False


def register() -> None:
    """Registers every task and mixture now (imports seqio); later calls do nothing."""
    global _registered
    if _registered:
        return
    _registered = True
    from tasks import mc4, translation  # noqa: PLC0415  (import seqio)

    translation.register_all()
    mc4.register_all()


def _half_imported(caller: str | None) -> bool:
    """Whether a tasks module other than `caller` is still executing its import."""
    return any(
        getattr(getattr(module, "__spec__", None), "_initializing", False)
        for name, module in list(sys.modules.items())
        if name.startswith("tasks.") and name != caller
    )


def _register_when_ready(caller: str | None = None) -> None:
    """Registers once seqio is imported and no tasks module is half-imported.

    Called after seqio's import and at the end of every tasks module that imports
    seqio at module level (`tasks._register_when_ready(__name__)`).
    """
    if "seqio" in sys.modules and not _registered and not _half_imported(caller):
        register()


class _RegisterAfterImport(importlib.abc.Loader):
    """Runs seqio's own loader, then registers the tasks."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _register_when_ready()

    def __getattr__(self, name):  # resource readers and the like: seqio's loader answers
        return getattr(self._loader, name)


class _SeqioImportHook(importlib.abc.MetaPathFinder):
    """Finds seqio as usual, once, and wraps its loader."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "seqio":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfterImport(spec.loader)
        return spec


if "seqio" in sys.modules:
    register()
elif not any(isinstance(finder, _SeqioImportHook) for finder in sys.meta_path):
    sys.meta_path.insert(0, _SeqioImportHook())
