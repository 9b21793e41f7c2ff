"""The Gradio Blocks page and its API endpoints.

`build_app(services)` lays out the page for one or more loaded models
(a `TranslationService` each, keyed by the name shown in the model picker) and
registers the public API (examples: README.md, "Web UI and API"):

    translate(text, source_lang="auto", target_lang=..., model=..., beam_size=4, max_length=0) -> str
        source_lang "auto" detects; any spelling of a language code the model has
        (`zh-CN`, `iw`, `sv-SE`, `deu`) is taken for it (mtmoe.data.languages.match_language).
        target_lang and model default to the first model's default target and the first model.
    translate_file(file, source_lang="auto", target_lang=..., model=..., beam_size=4, max_length=0) -> file
        a .txt file, one segment per line; the same options, defaults and checks as translate
        (TranslationService.check_options).
    localize_file(file, target_langs=[...], retranslate=False, model=..., beam_size=4) -> (file, summary)
        a localisation file (.po, .pot, .ftl, .properties, .xlf, .xliff) or a .txt through mtmoe.localize
        into one or more languages (a list or "de,fr"): the translated file, a zip for several,
        and one summary line per language (translated, skipped, flagged).
    detect_language(text, model=None) -> {"language": code, "probability": float in [0, 1]}
    languages(model=None) -> {model name: {"source": [...], "target": [...]}}
        each language {"code", "name" (English), "native_name"}; every model served, or the one named.

Every answer on the page is plain text: the output box is a Textbox, the routing view a
PNG drawn by matplotlib and a table of strings, so nothing the model or the
user wrote is rendered as HTML. Bad input raises `gr.Error` with a one-line
message (shown on the page and raised by gradio_client as AppError); any other
failure is logged with its traceback on the server and answered with a short
message, and the server keeps running.
"""

import functools
import importlib.abc
import importlib.machinery
import logging
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home unless the user turns them on
# Gradio runs every event inside a context that asks matplotlib for its backend; with none
# chosen, matplotlib picks one by importing pyplot (~0.4 s, on the server's first request).
# The routing view draws with Agg anyway (experts_view.py); a user's own setting wins.
os.environ.setdefault("MPLBACKEND", "Agg")


class _SkipGradioStubs(importlib.abc.MetaPathFinder):
    """Makes `import gradio` skip writing type stubs: about 1 s of the server's start-up.

    Gradio's component metaclass (gradio/component_meta.py) regenerates the
    `.pyi` stub of every component class as it is defined: it parses the
    component's source and renders a template, for each of ~80 classes at every
    `import gradio`, to keep the stubs that the wheel already ships in step
    with the source for type checkers. A server does not need them. This finder
    replaces that function with a no-op as soon as its module is loaded (before
    any component class is defined); if gradio changes, nothing is patched and
    the import is merely slower.
    """

    MODULE, FUNCTION = "gradio.component_meta", "create_or_modify_pyi"

    def find_spec(self, name, path, target=None):
        if name != self.MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and hasattr(spec.loader, "exec_module"):
            exec_module = spec.loader.exec_module

            def exec_then_patch(module):
                exec_module(module)
                if callable(getattr(module, self.FUNCTION, None)):
                    setattr(module, self.FUNCTION, lambda *args, **kwargs: None)

            spec.loader.exec_module = exec_then_patch
        return spec


_skip_gradio_stubs = _SkipGradioStubs()
sys.meta_path.insert(0, _skip_gradio_stubs)
try:
    import gradio as gr
finally:
    if _skip_gradio_stubs in sys.meta_path:
        sys.meta_path.remove(_skip_gradio_stubs)

from app import experts_view  # noqa: E402
from app.service import (  # noqa: E402
    AUTO,
    DEFAULT_BEAM_SIZE,
    UNKNOWN,
    RequestError,
    TranslationService,
    language_label,
)
from mtmoe import l10n_formats  # noqa: E402

log = logging.getLogger(__name__)

# (text, source, target): short software strings (the embedded corpus is
# software localisation) in several scripts; an example shows only when the
# model knows both of its languages.
EXAMPLES = [
    ("The document could not be saved because the disk is full.", "en", "de"),
    ("Le fichier n'a pas pu être ouvert.", AUTO, "en"),
    ("Die Änderungen wurden gespeichert.", "de", "en"),
    ("Не удалось открыть файл.", "ru", "en"),
    ("Το αρχείο αποθηκεύτηκε.", "el", "en"),
    ("لا يمكن فتح الملف.", "ar", "en"),
    ("फ़ाइल सहेजी नहीं जा सकी।", "hi", "en"),
    ("ファイルを保存しますか？", "ja", "en"),
    ("无法打开文件。", "zh-Hans", "en"),
    ("파일을 열 수 없습니다.", "ko", "en"),
    ("Click here to insert a new table.", "en", "fr"),
]

CSS = "#char-count p { margin: 0; font-size: 0.85em; opacity: 0.75; }"
# What the File tab takes: mtmoe.localize's formats, .txt among them.
FILE_TYPES = list(l10n_formats.EXTENSIONS)


def _answer_errors(fn):
    """RequestError -> gr.Error with its message; anything else -> logged, short gr.Error."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except RequestError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:  # the server must stay up: log it, answer in one line
            log.exception("request failed in %s", fn.__name__)
            raise gr.Error(f"the model failed on this request ({type(e).__name__}); the server log has the details",
                           print_exception=False) from None

    return wrapped


def _client_snippet(url: str, service: TranslationService) -> str:
    target = service.default_target()
    return (
        "from gradio_client import Client\n\n"
        f'client = Client("{url}")  # add auth=("user", "password") if the server asks\n'
        f'print(client.predict("The file could not be saved.", "auto", "{target}", api_name="/translate"))\n'
        "# source \"auto\" detects; codes as in the language lists on this page, or e.g. zh-CN, sv-SE\n"
        'print(client.predict(api_name="/languages"))  # each model\'s languages, with their names\n'
    )


def build_app(services: dict[str, TranslationService], *, url: str = "http://127.0.0.1:7860/") -> gr.Blocks:
    """The page for `services` (model name -> service; the first is the default).

    url: where the server will listen, for the gradio_client snippet on the page.
    """
    if not services:
        raise ValueError("build_app needs at least one model; pass --checkpoint DIR")
    names = list(services)
    first = services[names[0]]
    limits = first.limits

    def service_for(model: str | None) -> TranslationService:
        if not model:
            return first
        if model not in services:
            raise RequestError(f"unknown model {model!r}; choose one of: {', '.join(names)}")
        return services[model]

    # -- handlers (plain functions; gr.Error on bad input) -------------------

    @_answer_errors
    def translate_api(text: str, source_lang: str = AUTO, target_lang: str = first.default_target(),
                      model: str = names[0], beam_size: int = DEFAULT_BEAM_SIZE, max_length: int = 0) -> str:
        """Translate text, sentence by sentence; line breaks are kept.

        Args:
            text: the text to translate.
            source_lang: its language code (any spelling: zh-CN, iw, deu), or "auto" to detect it.
            target_lang: the code of the language to translate into.
            model: which model, when several are served (see /languages).
            beam_size: beams of the beam search (1 = greedy).
            max_length: most tokens per translated sentence (0 = the model's default).
        """
        service = service_for(model)
        return service.translate_text(text, source_lang=source_lang, target_lang=target_lang,
                                      beam_size=beam_size, max_length=max_length).text

    @_answer_errors
    def detect_api(text: str, model: str | None = None) -> dict:
        """The language `text` is written in, among the model's source languages, and py3langid's probability of it.

        Args:
            text: the text to look at.
            model: which model's source languages to choose among (default: the first model).
        Returns:
            {"language": code, "probability": number in [0, 1]}
        """
        service = service_for(model)
        code, probability = service.resolve_source(service.check_text(text), AUTO)
        return {"language": code, "probability": probability}

    @_answer_errors
    def languages_api(model: str | None = None) -> dict:
        """The source and target languages of every model served (or of the one named), with their names.

        Args:
            model: one model's name; empty for every model.
        Returns:
            {model name: {"source": [{"code", "name", "native_name"}, ...], "target": [...]}}
        """
        chosen = [model] if model else names
        return {name: service_for(name).language_table for name in chosen}

    @_answer_errors
    def on_translate(model, text, source_lang, target_lang, beam_size, max_length):
        service = service_for(model)
        result = service.translate_text(text, source_lang=source_lang, target_lang=target_lang,
                                        beam_size=beam_size, max_length=max_length)
        how = f"detected {result.detected_probability:.0%}" if result.detected_probability is not None else "chosen"
        unknown = result.source_lang == UNKNOWN  # detection unsure: translated all the same
        source = "an undetected language" if unknown else language_label(result.source_lang)
        info = (f"From {source} ({how}) · {result.num_sentences} "
                f"sentence{'s' if result.num_sentences != 1 else ''} · {result.seconds:.2f} s")
        detected = result.source_lang if result.detected_probability is not None and not unknown else None
        return result.text, info, detected

    @_answer_errors
    def on_translate_file(file, source_lang, target_lang, model, beam_size, max_length, progress=gr.Progress()):
        # Not preprocessed (see its event): `file` is gradio's FileData as a dict, already checked to lie in
        # the upload folder, and the options arrive as sent, for the service to check as /translate's.
        if not file:
            raise RequestError("no file uploaded; choose a UTF-8 .txt file with one segment per line")
        service = service_for(model)
        path, _ = service.translate_file(file["path"] if isinstance(file, dict) else file, source_lang=source_lang,
                                         target_lang=target_lang, beam_size=beam_size, max_length=max_length,
                                         progress=lambda fraction, desc: progress(fraction, desc=desc))
        return path

    @_answer_errors
    def on_localize_file(file, target_langs, retranslate, model, beam_size, progress=gr.Progress()):
        # Not preprocessed, as translate_file: the service checks the codes (any spelling), the flag and the beam.
        if not file:
            raise RequestError(f"no file uploaded; choose a {', '.join(FILE_TYPES)} file")
        service = service_for(model)
        path, outcomes = service.localize_file(file["path"] if isinstance(file, dict) else file,
                                               target_langs=target_langs, retranslate=retranslate, beam_size=beam_size,
                                               progress=lambda fraction, desc: progress(fraction, desc=desc))
        summary = "\n".join(f"{language_label(o.target)}: {o.counts()}" + "".join(f"; {note}" for note in o.notes)
                            for o in outcomes)
        return path, summary

    @_answer_errors
    def on_route(model, text, target_lang):
        service = service_for(model)
        trace = service.route(text, target_lang=target_lang)
        note = f"Routing of: {trace['sentence']}" + (" (first sentence, first tokens only)" if trace["truncated"] else "")
        return experts_view.routing_figure(trace), experts_view.routing_table(trace), note

    @_answer_errors
    def on_swap(model, source_text, target_text, source_lang, target_lang, detected):
        service = service_for(model)
        new_target = detected if source_lang == AUTO else source_lang
        if not new_target:
            raise RequestError("the source language is not known yet; translate once or choose it before swapping")
        try:  # a typed code (`deu`) becomes the model's (`de`)
            new_target = service.check_target(new_target)
        except RequestError:
            raise RequestError(f"this model does not translate into {language_label(new_target)}") from None
        try:
            new_source = service.resolve_source("", target_lang)[0] if target_lang else AUTO
        except RequestError:
            new_source = AUTO
        return target_text, source_text, new_source, new_target

    def on_model(model):
        service = service_for(model)
        return (gr.update(choices=service.source_choices(), value=AUTO),
                gr.update(choices=service.target_choices(), value=service.default_target()),
                gr.update(choices=service.target_choices(), value=[service.default_target()]))

    # -- layout -------------------------------------------------------------

    with gr.Blocks(title="mtmoe · Switch Transformer translation") as demo:
        gr.Markdown("## mtmoe · multilingual translation with a Switch Transformer")
        model = gr.Dropdown(
            choices=[(f"{name} (step {getattr(s.translator, 'step', '?')})", name) for name, s in services.items()],
            value=names[0], label="Model", visible=len(names) > 1, interactive=True)
        detected = gr.State(None)
        with gr.Row(equal_height=True):
            # Custom values: the translate_file API sends these boxes any spelling of a code
            # (`zh-CN`, `deu`) and any model's languages, not only the first model's list;
            # the service resolves them or answers in one line.
            source_lang = gr.Dropdown(choices=first.source_choices(), value=AUTO, label="Source language",
                                      info="Detect language: py3langid, among this model's source languages",
                                      filterable=True, allow_custom_value=True, scale=4, elem_id="source-lang")
            swap = gr.Button("⇄ Swap", scale=1, min_width=80, elem_id="swap")
            target_lang = gr.Dropdown(choices=first.target_choices(), value=first.default_target(),
                                      label="Target language", info="The languages this model writes",
                                      filterable=True, allow_custom_value=True, scale=4, elem_id="target-lang")
        with gr.Tab("Text"):
            with gr.Row():
                with gr.Column():
                    source_text = gr.Textbox(lines=7, max_lines=20, label="Source text", elem_id="source-text",
                                             placeholder="Type or paste text; paragraphs are split into sentences.")
                    counter = gr.Markdown(f"0 / {limits.max_chars} characters", elem_id="char-count")
                with gr.Column():
                    target_text = gr.Textbox(lines=7, max_lines=20, label="Translation", interactive=False,
                                             buttons=["copy"], elem_id="target-text")
                    info = gr.Textbox(show_label=False, container=False, interactive=False, max_lines=1,
                                      placeholder="Source language and timing appear here.", elem_id="info")
            translate_button = gr.Button("Translate", variant="primary", elem_id="translate")
            with gr.Accordion("Advanced", open=False):
                with gr.Row():
                    beam_size = gr.Slider(1, limits.max_beam_size, value=DEFAULT_BEAM_SIZE, step=1, label="Beam size",
                                          info="1 = greedy; more beams: slower, often better")
                    max_length = gr.Slider(0, limits.max_length_cap, value=0, step=1, label="Max length (tokens)",
                                           info="0 = the model's default")
            examples = [[text, src, tgt] for text, src, tgt in EXAMPLES
                        if (src == AUTO or src in first.source_languages) and tgt in first.languages]
            if examples:
                gr.Examples(examples=examples, inputs=[source_text, source_lang, target_lang], label="Examples")
        with gr.Tab("File"):
            gr.Markdown(f"A localisation file (gettext `.po`/`.pot`, Fluent `.ftl`, `.properties`, XLIFF 1.2 or 2.0 "
                        f"`.xlf`) or a UTF-8 `.txt` (one segment per line), at most {limits.max_file_bytes // 1000} kB. "
                        f"Keys, comments and placeholders are kept; every machine translation is marked for review. "
                        f"Several languages come back as a zip. (The language boxes above are the Text tab's.)")
            with gr.Row():
                upload = gr.File(label="File", file_types=FILE_TYPES, type="filepath", elem_id="upload")
                download = gr.File(label="Translated file", interactive=False, elem_id="download")
            # Custom values: /localize_file takes any spelling of a code, as /translate does.
            file_targets = gr.Dropdown(choices=first.target_choices(), value=[first.default_target()],
                                       multiselect=True, label="Translate into", filterable=True,
                                       allow_custom_value=True, elem_id="file-targets")
            retranslate = gr.Checkbox(False, label="Translate entries that are already translated too",
                                      elem_id="retranslate")
            file_button = gr.Button("Translate file", variant="primary", elem_id="translate-file")
            file_info = gr.Textbox(show_label=False, container=False, interactive=False, lines=2, max_lines=8,
                                   placeholder="What was translated, skipped and flagged appears here.",
                                   elem_id="file-info")
            # /translate_file (a .txt, one language, the Source and Target boxes) has no button of its own.
            translate_file_trigger = gr.Button(visible=False)
        with gr.Accordion("What the experts did", open=False):
            gr.Markdown("Which expert each source token was sent to in each MoE layer of the encoder, "
                        "and the share of tokens dropped because their expert was full.")
            route_button = gr.Button("Show the routing of the source text", elem_id="route")
            route_note = gr.Textbox(show_label=False, container=False, interactive=False, max_lines=2)
            route_plot = gr.Plot(label="Expert per token", format="png", elem_id="route-plot")
            route_table = gr.Dataframe(headers=["layer", "tokens dropped", "experts used / tokens"],
                                       datatype="str", interactive=False, label="Per layer")
        with gr.Accordion("Use from Python (gradio_client)", open=False):
            gr.Code(_client_snippet(url, first), language="python", interactive=False)

        # -- events ---------------------------------------------------------
        gr.api(translate_api, api_name="translate")
        gr.api(detect_api, api_name="detect_language")
        gr.api(languages_api, api_name="languages")
        translate_inputs = [model, source_text, source_lang, target_lang, beam_size, max_length]
        for trigger in (translate_button.click, source_text.submit):
            trigger(on_translate, inputs=translate_inputs, outputs=[target_text, info, detected],
                    api_visibility="private")
        # preprocess=False: the sliders' and dropdowns' own checks would answer out-of-range or
        # unknown values in gradio's words (a traceback for None); the service checks them as for /translate.
        translate_file_trigger.click(on_translate_file, outputs=download, api_name="translate_file", preprocess=False,
                                     inputs=[upload, source_lang, target_lang, model, beam_size, max_length])
        file_button.click(on_localize_file, inputs=[upload, file_targets, retranslate, model, beam_size],
                          outputs=[download, file_info], api_name="localize_file", preprocess=False)
        route_button.click(on_route, inputs=[model, source_text, target_lang],
                           outputs=[route_plot, route_table, route_note], api_visibility="private")
        swap.click(on_swap, inputs=[model, source_text, target_text, source_lang, target_lang, detected],
                   outputs=[source_text, target_text, source_lang, target_lang], api_visibility="private")
        model.change(on_model, inputs=model, outputs=[source_lang, target_lang, file_targets], api_visibility="private")
        # Counted in the browser: code points, as the server counts them.
        source_text.change(None, inputs=source_text, outputs=counter, js=(
            f"(text) => {{ const n = [...(text ?? '')].length; "
            f"return n + ' / {limits.max_chars} characters' + (n > {limits.max_chars} ? ' (over the limit)' : ''); }}"))
    return demo
